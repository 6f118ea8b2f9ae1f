.runtime.hostname == "on" and .env[0].value == "yes" and .env[1].value == "${NOT_EXPANDED}"
and .env[2].value == "1.10" and .labels["app.kubernetes.io/name"] == "web"
and .network.policy.default_egress == "allow"
