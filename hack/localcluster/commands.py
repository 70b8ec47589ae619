"""The command line of each process the local control plane runs. Pure: paths and ports in,
argv out; `cluster.py` starts them and waits for each to be ready."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hack.localcluster.cluster import ClusterOptions

SERVICE_CIDR = "10.96.0.0/16"  # allocated by the API server, never connected to
ISSUER = "https://kubernetes.default.svc.cluster.local"
PORTS = ("etcd", "etcd_peer", "api", "cm", "sched", "agent", "registry")


@dataclass(frozen=True)
class Credentials:
    """The files the control-plane processes authenticate with."""

    ca: Path
    serving: tuple[Path, Path]  # the API server's certificate and key
    kubelet_client: tuple[Path, Path]  # the API server's client certificate towards the node agent
    sa_key: Path  # signs service-account tokens
    sa_pub: Path  # verifies them
    kubeconfigs: dict[str, Path]  # by user: admin, controller-manager, scheduler, node-agent


def etcd(binary: str, data_dir: Path, ports: dict[str, int]) -> list[str]:
    client, peer = f"http://127.0.0.1:{ports['etcd']}", f"http://127.0.0.1:{ports['etcd_peer']}"
    return [
        binary,
        "--name=capstan",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=capstan={peer}",
        "--unsafe-no-fsync",
        "--log-level=warn",
        "--quota-backend-bytes=4294967296",
    ]


def kube_apiserver(binary: str, ports: dict[str, int], creds: Credentials) -> list[str]:
    return [
        binary,
        f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
        f"--secure-port={ports['api']}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--tls-cert-file={creds.serving[0]}",
        f"--tls-private-key-file={creds.serving[1]}",
        f"--client-ca-file={creds.ca}",
        "--authorization-mode=Node,RBAC",
        f"--service-account-issuer={ISSUER}",
        f"--api-audiences={ISSUER}",
        f"--service-account-key-file={creds.sa_pub}",
        f"--service-account-signing-key-file={creds.sa_key}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--allow-privileged=true",
        f"--kubelet-client-certificate={creds.kubelet_client[0]}",
        f"--kubelet-client-key={creds.kubelet_client[1]}",
        "--kubelet-preferred-address-types=InternalIP",
        # Endpoints may not hold loopback addresses; nothing here needs the reconciler.
        "--endpoint-reconciler-type=none",
        "--profiling=false",
        "--max-requests-inflight=1000",
        "--max-mutating-requests-inflight=500",
    ]


def kube_controller_manager(binary: str, ports: dict[str, int], creds: Credentials) -> list[str]:
    kubeconfig = creds.kubeconfigs["controller-manager"]
    return [
        binary,
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        f"--secure-port={ports['cm']}",
        "--bind-address=127.0.0.1",
        f"--service-account-private-key-file={creds.sa_key}",
        f"--root-ca-file={creds.ca}",
        "--use-service-account-credentials=true",
        "--leader-elect=false",
        # The endpoint controllers would only log rejections of loopback pod IPs.
        "--controllers=*,-endpoints-controller,-endpointslice-controller,-endpointslice-mirroring-controller",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--terminated-pod-gc-threshold=500",
        "--kube-api-qps=200",
        "--kube-api-burst=400",
        "--concurrent-job-syncs=20",
        "--concurrent-deployment-syncs=10",
        "--concurrent-replicaset-syncs=10",
    ]


def scheduler_config(kubeconfig: Path) -> str:
    """The KubeSchedulerConfiguration file's text (client QPS is only settable there)."""
    return (
        "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n"
        f"clientConnection:\n  kubeconfig: {kubeconfig}\n  qps: 200\n  burst: 400\n"
        "leaderElection:\n  leaderElect: false\n"
    )


def kube_scheduler(binary: str, config: Path, ports: dict[str, int], creds: Credentials) -> list[str]:
    kubeconfig = creds.kubeconfigs["scheduler"]
    return [
        binary,
        f"--config={config}",
        f"--secure-port={ports['sched']}",
        "--bind-address=127.0.0.1",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
    ]


def node_agent(
    options: ClusterOptions,
    ports: dict[str, int],
    creds: Credentials,
    pods_dir: Path,
    tls: tuple[Path, Path],
    registry: str = "",
    portforward_bin: str = "",
) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "hack.localcluster.nodeagent",
        f"--kubeconfig={creds.kubeconfigs['node-agent']}",
        f"--state-dir={pods_dir}",
        f"--nodes={options.nodes}",
        f"--gpus-per-node={options.gpus_per_node}",
        f"--cpus-per-node={options.cpus_per_node}",
        f"--memory-per-node={options.memory_per_node}",
        f"--port={ports['agent']}",
        f"--api-port={ports['api']}",
        f"--tls-cert={tls[0]}",
        f"--tls-key={tls[1]}",
    ]
    if options.simulate:
        argv.append("--simulate")
    if options.image_store is not None:
        argv.append(f"--image-store={options.image_store}")
    if registry:
        argv.append(f"--registry-mirror={registry}")
    if options.prepull:
        argv.append("--prepull=" + ",".join(options.prepull))
    if portforward_bin:
        argv.append(f"--portforward-bin={portforward_bin}")
    return argv
