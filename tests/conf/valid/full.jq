.image.Oci.reference == "python:3.12-slim" and .image.Oci.root_disk.size_mib == 8192
and .resources == {"cpus": 2, "memory_mib": 1024}
and .lifecycle.max_duration_secs == 43200 and .lifecycle.idle_timeout_secs == 600
and .rlimits[0].resource == "Nofile" and .security_profile == "restricted"
and .env == [{"key": "PORT", "value": "8080"}, {"key": "TOKEN", "value": "e2e-token"}]
and .init.env == [["INIT_MODE", "quiet"]]
and ([.mounts[] | .type] | sort) == ["Bind", "Bind", "DiskImage", "Named", "Tmpfs"]
and (.mounts[] | select(.guest == "/app/data") | .host | endswith("tests/conf/valid/data"))
and (.mounts[] | select(.guest == "/app/data") | .options.readonly)
and (.mounts[] | select(.guest == "/srv") | .quota_mib) == 1024
and (.mounts[] | select(.guest == "/seed") | .format) == "Qcow2"
and (.patches | length) == 10 and .patches[0].Mkdir.path == "/opt/common"
and (.patches[2].CopyFile.src | endswith("tests/conf/valid/data/app.toml"))
and .patches[2].CopyFile.mode == 420
and .patches[5].File.content == [72, 101, 108, 108, 111]
and .network.policy.default_egress == "deny"
and .network.policy.rules[0] == {"direction": "egress", "destination": {"cidr": "169.254.169.254/32"}, "protocols": [], "ports": [], "action": "deny"}
and ([.network.ports[].host_port] == [8000, 9100, 8001])
and .network.dns.query_timeout_ms == 5000
and .network.tls.enabled and .network.tls.bypass == ["*.internal"]
and .network.max_connections == 256
and .network.secrets.secrets[0].source == {"kind": "env", "var": "OPENAI_API_KEY"}
and .network.secrets.secrets[1].source == {"kind": "env", "var": "DB_DSN"}
and .network.secrets.secrets[1].injection.basic_auth
and .runtime.scripts.start == "#!/bin/bash\npython app.py"
