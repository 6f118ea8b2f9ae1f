(.image.Bind | endswith("tests/conf/valid/data"))
and .network.policy == {"default_egress": "deny", "default_ingress": "deny", "rules": []}
