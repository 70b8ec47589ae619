"""The local Kubernetes control plane for development and CI: etcd, kube-apiserver,
kube-controller-manager and kube-scheduler built from the official Go modules, a node agent
that runs pods as local processes, and SeaweedFS as the S3 endpoint, all on loopback."""
