"""The node agent: the only stand-in in the local cluster. It replaces the kubelet and the
container runtime by registering simulated GPU nodes and running each bound pod's containers
as local processes (own loopback IP, private mount namespace, volumes, env, probes, logs)."""
