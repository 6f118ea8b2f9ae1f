.image.Oci.reference == "busybox" and .resources == {"cpus": 1, "memory_mib": 512}
and .network.policy == null and .pull_policy == "IfMissing"
