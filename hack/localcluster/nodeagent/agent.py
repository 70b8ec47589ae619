"""Registers the nodes, keeps them Ready, and hands every pod bound to them to a PodWorker
(or, in simulate mode, marks it Running without starting anything)."""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from kubernetes.client.exceptions import ApiException

from hack.localcluster.nodeagent import hosts, kube, podips
from hack.localcluster.nodeagent.container import rfc3339
from hack.localcluster.nodeagent.images import ImageStore
from hack.localcluster.nodeagent.kube import SMP, connect, list_and_watch
from hack.localcluster.nodeagent.logs import serve_logs
from hack.localcluster.nodeagent.pod import PodWorker
from hack.localcluster.nodeagent.portforward import PortForwarder

log = logging.getLogger("nodeagent")
LEASE_S = 40
RENEW_S = 10
KUBELET_VERSION = "v1.37.2"


@dataclass
class AgentOptions:
    kubeconfig: str
    state_dir: Path
    nodes: int
    gpus_per_node: int
    cpus_per_node: int
    memory_per_node: str
    port: int
    api_port: int
    tls_cert: str
    tls_key: str
    simulate: bool = False
    node_prefix: str = "capstan-node"
    workdir: str = os.getcwd()
    image_store: Path | None = None
    registry_mirror: str = ""
    """registry_mirror (host:port) serves Docker Hub references (`capstan/trainer:0.1.0`)."""
    prepull: tuple[str, ...] = ()
    portforward_bin: str = ""
    """portforward_bin is capstan-portforward, which serves `kubectl port-forward`; unset, the
    node answers 501 to it."""
    """prepull: images pulled before the nodes report Ready (as a pre-pull DaemonSet would)."""
    """image_store, when set, is where pulled images live: pods run from their images. Unset,
    pods run their command on the node from the project's virtualenv (the fast tiers)."""


class Agent:
    def __init__(self, o: AgentOptions):
        self.o = o
        self.api = connect(o.kubeconfig)
        self.state_dir = o.state_dir
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.node_names = [f"{o.node_prefix}-{i}" for i in range(o.nodes)]
        self.allocatable = {
            "cpu": str(o.cpus_per_node),
            "memory": o.memory_per_node,
            "pods": "250",
            "nvidia.com/gpu": str(o.gpus_per_node),
            "ephemeral-storage": "100Gi",
        }
        self.workdir = o.workdir
        self.port_forwarder = (
            PortForwarder(o.portforward_bin, _socket_path(self.state_dir / "portforward.sock"))
            if o.portforward_bin
            else None
        )
        self.images = ImageStore(o.image_store, o.registry_mirror) if o.image_store else None
        venv_bin = str(Path(sys.executable).parent)
        # From an image, PATH, HOME and LANG are the image's; only what the kubelet adds stays.
        node_env = {
            "PATH": f"{venv_bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8",
        }
        self.base_env = {
            **({} if self.images else node_env),
            # In-cluster clients reach the API server on loopback, never through a ClusterIP.
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(o.api_port),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(o.api_port),
        }
        if "CAPSTAN_LOCALCLUSTER" in os.environ:  # lets `cluster down` find every pod process
            self.base_env["CAPSTAN_LOCALCLUSTER"] = os.environ["CAPSTAN_LOCALCLUSTER"]
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.workers: dict[str, PodWorker] = {}
        self.pods: dict[str, dict] = {}  # every pod in the cluster, by uid (for /etc/hosts)
        self.services: dict[str, dict] = {}
        self.ips: dict[str, str] = {}
        self._next_ip = podips.first_ip(podips.listening_ips())
        self.hosts_dirty = threading.Event()
        self.pool = ThreadPoolExecutor(16)

    # ---- nodes ---------------------------------------------------------------------------------
    def register_nodes(self) -> None:
        for name in self.node_names:
            node = {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "labels": {
                        "kubernetes.io/hostname": name,
                        "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64",
                        "node.kubernetes.io/instance-type": "capstan-local",
                        "nvidia.com/gpu.present": "true",
                    },
                },
            }
            try:
                self.api.create_node(node, _preload_content=False)
            except ApiException as exc:
                if exc.status != 409:
                    raise
            self.patch_node_status(name)

    def patch_node_status(self, name: str) -> None:
        now = rfc3339()
        conds = [
            ("Ready", "True", "KubeletReady", "capstan node agent is posting ready status"),
            ("MemoryPressure", "False", "KubeletHasSufficientMemory", ""),
            ("DiskPressure", "False", "KubeletHasNoDiskPressure", ""),
            ("PIDPressure", "False", "KubeletHasSufficientPID", ""),
        ]
        status = {
            "capacity": self.allocatable,
            "allocatable": self.allocatable,
            "conditions": [
                {
                    "type": t,
                    "status": s,
                    "reason": r,
                    "message": m,
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                }
                for t, s, r, m in conds
            ],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.o.port}},
            "nodeInfo": {
                "machineID": name,
                "systemUUID": name,
                "bootID": name,
                "kernelVersion": os.uname().release,
                "osImage": "capstan local node",
                "containerRuntimeVersion": "capstan-process://0.1",
                "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }
        self.api.patch_node_status(name, {"status": status}, _content_type=SMP, _preload_content=False)

    def renew_leases(self) -> None:
        while not self.stop.wait(RENEW_S):
            for name in self.node_names:
                try:
                    self._renew(name)
                except Exception as exc:  # keep renewing the others; the next round retries
                    log.warning("lease %s: %s", name, exc)

    def _renew(self, name: str) -> None:
        now = dt_micro()
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "namespace": "kube-node-lease", "ownerReferences": []},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_S, "renewTime": now},
        }
        from kubernetes import client

        coord = client.CoordinationV1Api(self.api.api_client)
        try:
            coord.patch_namespaced_lease(
                name, "kube-node-lease", {"spec": body["spec"]}, _preload_content=False
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            coord.create_namespaced_lease("kube-node-lease", body, _preload_content=False)

    # ---- pods ----------------------------------------------------------------------------------
    def alloc_ip(self, uid: str) -> str:
        with self.lock:
            if uid not in self.ips:
                used, busy = set(self.ips.values()), podips.listening_ips()
                while True:
                    ip = str(ipaddress.ip_address(self._next_ip))
                    self._next_ip = podips.next_after(self._next_ip)
                    if podips.usable(ip, used, busy):
                        break
                self.ips[uid] = ip
            return self.ips[uid]

    def release(self, uid: str) -> None:
        with self.lock:
            self.ips.pop(uid, None)
            self.workers.pop(uid, None)
        self.hosts_dirty.set()

    def worker_by_name(self, ns: str, name: str) -> PodWorker | None:
        with self.lock:
            return next((w for w in self.workers.values() if w.ns == ns and w.name == name), None)

    def on_pod(self, kind: str, pod: dict) -> None:
        uid = pod["metadata"]["uid"]
        if kind == "DELETED":
            self.pods.pop(uid, None)
        else:
            self.pods[uid] = pod
        self.hosts_dirty.set()
        if pod["spec"].get("nodeName") not in self.node_names:
            return
        if self.o.simulate:
            self.pool.submit(self._simulate, kind, pod)
            return
        with self.lock:
            worker = self.workers.get(uid)
            if worker is None and kind != "DELETED":
                if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                    if pod["metadata"].get("deletionTimestamp"):
                        self.pool.submit(self._force_delete, pod)
                    return
                worker = PodWorker(self, pod)
                self.workers[uid] = worker
                worker.start()
                return
        if worker is not None:
            worker.removed() if kind == "DELETED" else worker.update(pod)

    def _force_delete(self, pod: dict) -> None:
        meta = pod["metadata"]
        try:
            kube.force_delete_pod(self.api, meta["namespace"], meta["name"], meta["uid"])
        except ApiException as exc:
            log.warning("delete %s: %s", meta["name"], exc.status)

    def _simulate(self, kind: str, pod: dict) -> None:
        """Scale-test mode: Running and Ready at once, no process; deletion is immediate."""
        meta = pod["metadata"]
        try:
            if kind == "DELETED":
                self.release(meta["uid"])
            elif meta.get("deletionTimestamp"):
                self._force_delete(pod)
            elif (pod.get("status") or {}).get("phase") != "Running":
                now = rfc3339()
                ip = self.alloc_ip(meta["uid"])
                st = {
                    "phase": "Running",
                    "hostIP": "127.0.0.1",
                    "hostIPs": [{"ip": "127.0.0.1"}],
                    "podIP": ip,
                    "podIPs": [{"ip": ip}],
                    "startTime": now,
                    "conditions": [
                        {"type": t, "status": "True", "lastTransitionTime": now}
                        for t in ("PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready")
                    ],
                    "containerStatuses": [
                        {
                            "name": c["name"],
                            "image": c.get("image", ""),
                            "imageID": "",
                            "ready": True,
                            "started": True,
                            "restartCount": 0,
                            "state": {"running": {"startedAt": now}},
                        }
                        for c in pod["spec"]["containers"]
                    ],
                }
                self.api.patch_namespaced_pod_status(
                    meta["name"], meta["namespace"], {"status": st}, _content_type=SMP, _preload_content=False
                )
        except ApiException as exc:
            if exc.status != 404:
                log.warning("simulate %s/%s: %s", meta["namespace"], meta["name"], exc.status)

    def on_service(self, kind: str, svc: dict) -> None:
        uid = svc["metadata"]["uid"]
        if kind == "DELETED":
            self.services.pop(uid, None)
        else:
            self.services[uid] = svc
        self.hosts_dirty.set()

    def hosts_for(self, pod: dict, pod_ip: str) -> str:
        return hosts.render(pod, pod_ip, list(self.pods.values()), list(self.services.values()))

    def refresh_hosts(self) -> None:
        # Rewrite in place (not rename): the file is bind-mounted into running pods.
        while not self.stop.is_set():
            if not self.hosts_dirty.wait(1):
                continue
            self.hosts_dirty.clear()
            with self.lock:
                workers = list(self.workers.values())
            for w in workers:
                path = w.dir / "hosts"
                if not w.pod_ip or not path.exists():
                    continue
                text = self.hosts_for(w.pod, w.pod_ip)
                if path.read_text() != text:
                    with open(path, "r+") as f:
                        f.write(text)
                        f.truncate()
            self.stop.wait(0.3)

    # ---- run ---------------------------------------------------------------------------------
    def run(self) -> None:
        serve_logs(self, self.o.port, self.o.tls_cert, self.o.tls_key)
        self.prepull()
        self.register_nodes()
        for fn in (self.renew_leases, self.refresh_hosts):
            threading.Thread(target=fn, daemon=True, name=fn.__name__).start()
        threading.Thread(target=self._watch_services, daemon=True, name="services").start()
        log.info(
            "node agent: %d nodes %s, simulate=%s", len(self.node_names), self.node_names, self.o.simulate
        )
        for _ in list_and_watch(self.api.list_pod_for_all_namespaces, self.on_pod, self.stop):
            pass

    def prepull(self) -> None:
        """Pull the configured images before any pod can land here (the first pull of the
        trainer image is gigabytes), then drop unpacked images nothing refers to."""
        if self.images is None:
            return
        for ref in self.o.prepull:
            start = time.monotonic()
            image = self.images.get(ref, "Always")  # a failure stops the agent: `up` reports it
            log.info("pulled %s (%s) in %.0f s", ref, image.digest, time.monotonic() - start)
        removed = self.images.collect()
        if removed:
            log.info("removed %d unpacked images no reference uses", len(removed))

    def _watch_services(self) -> None:
        for _ in list_and_watch(self.api.list_service_for_all_namespaces, self.on_service, self.stop):
            pass

    def shutdown(self, *_):
        """Stop every pod's processes (as a node going away would), then exit."""
        self.stop.set()
        with self.lock:
            workers = list(self.workers.values())
        for w in workers:
            w._stop_all(2)
        if self.port_forwarder is not None:
            self.port_forwarder.stop()
        os._exit(0)


def _socket_path(path: Path) -> Path:
    """`path`, or a short one in /tmp where it passes the 107 bytes a Unix socket's name may have."""
    return path if len(str(path)) < 100 else Path(f"/tmp/capstan-pf-{os.getpid()}.sock")


def dt_micro() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


def main() -> None:
    import argparse

    p = argparse.ArgumentParser(prog="nodeagent")
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--state-dir", type=Path, required=True)
    p.add_argument("--nodes", type=int, default=2)
    p.add_argument("--gpus-per-node", type=int, default=4)
    p.add_argument("--cpus-per-node", type=int, default=16)
    p.add_argument("--memory-per-node", default="64Gi")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--api-port", type=int, required=True)
    p.add_argument("--tls-cert", required=True)
    p.add_argument("--tls-key", required=True)
    p.add_argument("--simulate", action="store_true")
    p.add_argument("--workdir", default=str(Path(__file__).resolve().parents[3]))
    p.add_argument("--image-store", type=Path, default=None, help="run pods from their images, kept here")
    p.add_argument("--registry-mirror", default="", help="host:port serving Docker Hub references")
    p.add_argument("--prepull", default="", help="comma-separated images to pull before the nodes are Ready")
    p.add_argument("--portforward-bin", default="", help="capstan-portforward, for kubectl port-forward")
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    agent = Agent(
        AgentOptions(
            kubeconfig=a.kubeconfig,
            state_dir=a.state_dir,
            nodes=a.nodes,
            gpus_per_node=a.gpus_per_node,
            cpus_per_node=a.cpus_per_node,
            memory_per_node=a.memory_per_node,
            port=a.port,
            api_port=a.api_port,
            tls_cert=a.tls_cert,
            tls_key=a.tls_key,
            simulate=a.simulate,
            workdir=a.workdir,
            image_store=a.image_store,
            registry_mirror=a.registry_mirror,
            prepull=tuple(r for r in a.prepull.split(",") if r),
            portforward_bin=a.portforward_bin,
        )
    )
    signal.signal(signal.SIGTERM, agent.shutdown)
    signal.signal(signal.SIGINT, agent.shutdown)
    agent.run()
