"""Start and stop the local control plane. Every process it starts (and every process those
start) carries CAPSTAN_LOCALCLUSTER=<id> in its environment, so `down` can find and stop all of
them, pods included, even if a parent died first."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from hack.localcluster import commands, prometheus, registry, s3
from hack.localcluster.kubeconfig import write_kubeconfig
from hack.localcluster.pki import PKI
from hack.localcluster.ports import free_port

MARKER = "CAPSTAN_LOCALCLUSTER"
PREPULL_DEADLINE_S = 900.0
UNSCHEDULABLE_TAINTS = ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")


@dataclass
class ClusterOptions:
    root: Path
    bin_dir: Path
    nodes: int = 2
    gpus_per_node: int = 4
    cpus_per_node: int = 16
    memory_per_node: str = "64Gi"
    simulate: bool = False
    s3: bool = True
    prometheus: bool = True
    """prometheus: start Prometheus scraping the annotated pods (its URL in prometheus.addr)."""
    start_deadline_s: float = 120.0
    registry_storage: Path | None = None
    """registry_storage, when set, is served by an OCI registry on loopback (what `make images`
    pushed); its address is in registry.env."""
    image_store: Path | None = None
    """image_store, when set, makes the node agent run pods from their images, kept there; the
    registry serves their Docker Hub names (`capstan/trainer:0.1.0`) as a mirror would."""
    prepull: tuple[str, ...] = ()
    """prepull: images the node agent pulls before its nodes are Ready."""


def wait_until(
    what: str, check, deadline_s: float, proc: subprocess.Popen | None = None, log: Path | None = None
):
    end = time.monotonic() + deadline_s
    while True:
        try:
            if check():
                return
        except OSError:
            pass
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"{what}: process exited with {proc.returncode}\n{tail}")
        if time.monotonic() > end:
            tail = log.read_text()[-3000:] if log and log.exists() else ""
            raise TimeoutError(f"timed out after {deadline_s:.0f} s waiting for {what}\n{tail}")
        time.sleep(0.2)


class Cluster:
    def __init__(self, options: ClusterOptions):
        self.options = options
        self.root = options.root.resolve()
        self.state_dir = self.root / "cluster"
        self.kubeconfig = self.root / "kubeconfig"
        self.s3_env_file = self.root / "s3.env"
        self.registry_file = self.root / "registry.addr"
        self.prometheus_file = self.root / "prometheus.addr"
        self.state_file = self.state_dir / "state.json"

    # ---- state -------------------------------------------------------------------------------
    @property
    def marker(self) -> dict[str, str]:
        """The environment entry that makes a process this cluster's: `down` stops it too."""
        return {MARKER: self._state()["id"]}

    def _state(self) -> dict:
        return json.loads(self.state_file.read_text()) if self.state_file.exists() else {}

    def _save(self, state: dict) -> None:
        self.state_file.write_text(json.dumps(state, indent=2))

    def _bin(self, name: str) -> str:
        path = self.options.bin_dir / name
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: run `make install` (hack/localcluster/build.sh)")
        return str(path)

    def _spawn(self, state: dict, name: str, argv: list[str], env: dict | None = None) -> subprocess.Popen:
        log = self._log(name)
        full_env = {**os.environ, **(env or {}), MARKER: state["id"]}
        proc = subprocess.Popen(
            argv,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            env=full_env,
            start_new_session=True,
            cwd=self.state_dir,
        )
        state.setdefault("pids", {})[name] = proc.pid
        self._save(state)
        return proc

    def _log(self, name: str) -> Path:
        return self.state_dir / "logs" / f"{name}.log"

    # ---- up ------------------------------------------------------------------------------------
    def up(self) -> None:
        if self.healthy():
            print(f"already running ({self.kubeconfig})")
            return
        self.down(quiet=True)
        (self.state_dir / "logs").mkdir(parents=True, exist_ok=True)
        pki = PKI(self.root / "pki")  # kept across restarts: a warm start skips key generation
        state = {"id": uuid.uuid4().hex, "ports": {n: free_port() for n in commands.PORTS}}
        self._save(state)
        api_url = f"https://127.0.0.1:{state['ports']['api']}"
        creds = self._credentials(pki, api_url)
        self._start_etcd(state)
        self._start_apiserver(state, creds, api_url)
        self._start_controller_manager(state, creds)
        self._start_scheduler(state, creds)
        if self.options.s3:
            self._start_s3(state)
        if self.options.registry_storage is not None:
            self._start_registry(state)
        if self.options.prometheus:
            self._start_prometheus(state, creds)
        self._start_node_agent(state, pki, creds)
        self._wait_for_default_service_account()

    def _credentials(self, pki: PKI, api_url: str) -> commands.Credentials:
        """Certificates for the API server and a kubeconfig for each of its clients."""
        serving = pki.leaf(
            "apiserver",
            "kube-apiserver",
            server=True,
            ips=("127.0.0.1",),
            dns=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
        )
        kubelet_client = pki.leaf("apiserver-kubelet-client", "kube-apiserver", ("system:masters",))
        sa_key = pki.service_account_key()
        kubeconfigs = {}
        for name, cn, orgs in (
            ("admin", "capstan-admin", ("system:masters",)),
            ("controller-manager", "system:kube-controller-manager", ()),
            ("scheduler", "system:kube-scheduler", ()),
            ("node-agent", "capstan-node-agent", ("system:masters",)),
        ):
            crt, key = pki.leaf(name, cn, orgs)
            path = self.kubeconfig if name == "admin" else self.state_dir / f"{name}.kubeconfig"
            write_kubeconfig(path, api_url, pki.ca_cert_path, crt, key, user=name)
            kubeconfigs[name] = path
        return commands.Credentials(
            ca=pki.ca_cert_path,
            serving=serving,
            kubelet_client=kubelet_client,
            sa_key=sa_key,
            sa_pub=pki.folder / "sa.pub",
            kubeconfigs=kubeconfigs,
        )

    def _start_etcd(self, state: dict) -> None:
        port = state["ports"]["etcd"]
        argv = commands.etcd(self._bin("etcd"), self.state_dir / "etcd", state["ports"])
        proc = self._spawn(state, "etcd", argv)
        wait_until(
            "etcd /health",
            lambda: (
                b'"health":"true"'
                in urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
            ),
            self.options.start_deadline_s,
            proc,
            self._log("etcd"),
        )

    def _start_apiserver(self, state: dict, creds: commands.Credentials, api_url: str) -> None:
        argv = commands.kube_apiserver(self._bin("kube-apiserver"), state["ports"], creds)
        proc = self._spawn(state, "kube-apiserver", argv)
        ctx = ssl.create_default_context(cafile=str(creds.ca))
        ctx.load_cert_chain(str(self.root / "pki" / "admin.crt"), str(self.root / "pki" / "admin.key"))
        wait_until(
            "kube-apiserver /readyz",
            lambda: urllib.request.urlopen(f"{api_url}/readyz", context=ctx, timeout=3).status == 200,
            self.options.start_deadline_s,
            proc,
            self._log("kube-apiserver"),
        )

    def _start_controller_manager(self, state: dict, creds: commands.Credentials) -> None:
        argv = commands.kube_controller_manager(self._bin("kube-controller-manager"), state["ports"], creds)
        self._spawn(state, "kube-controller-manager", argv)

    def _start_scheduler(self, state: dict, creds: commands.Credentials) -> None:
        config = self.state_dir / "scheduler.yaml"
        config.write_text(commands.scheduler_config(creds.kubeconfigs["scheduler"]))
        argv = commands.kube_scheduler(self._bin("kube-scheduler"), config, state["ports"], creds)
        self._spawn(state, "kube-scheduler", argv)

    def _start_s3(self, state: dict) -> None:
        """SeaweedFS's S3 gateway (s3.py), and s3.env saying how to reach it."""
        ports = state["s3_ports"] = s3.ports()
        data = self.state_dir / "s3"
        argv = s3.command(self._bin("weed"), data, ports, s3.prepare(data))
        proc = self._spawn(state, "s3", argv, env=s3.WEED_ENV)
        wait_until(
            f"SeaweedFS's S3 gateway to answer GET / on 127.0.0.1:{ports['s3']}",
            lambda: s3.ready(ports["s3"]),
            self.options.start_deadline_s,
            proc,
            self._log("s3"),
        )
        env = s3.env(ports["s3"])
        self.s3_env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))

    def _start_prometheus(self, state: dict, creds: commands.Credentials) -> None:
        """Prometheus (prometheus.py) discovering pods through the API server as the admin user;
        `prometheus.addr` holds its URL."""
        port = state["prometheus_port"] = free_port()
        data = self.state_dir / "prometheus"
        data.mkdir(parents=True, exist_ok=True)
        cfg = data / "prometheus.yml"
        cfg.write_text(prometheus.config(creds.kubeconfigs["admin"]))
        proc = self._spawn(
            state, "prometheus", prometheus.command(self._bin("prometheus"), cfg, data / "tsdb", port)
        )
        wait_until(
            f"Prometheus' /-/ready on 127.0.0.1:{port}",
            lambda: prometheus.ready(port),
            self.options.start_deadline_s,
            proc,
            self._log("prometheus"),
        )
        self.prometheus_file.write_text(prometheus.url(port) + "\n")

    def _start_registry(self, state: dict) -> None:
        """The registry over the shared storage; `registry` holds its host:port."""
        port = state["ports"]["registry"]
        storage = self.options.registry_storage
        storage.mkdir(parents=True, exist_ok=True)
        config = self.state_dir / "registry.yml"
        config.write_text(registry.config(storage, port))
        proc = self._spawn(state, "registry", registry.command(self._bin("registry"), config))
        wait_until(
            "the OCI registry's /v2/",
            lambda: registry.ready(port),
            self.options.start_deadline_s,
            proc,
            self._log("registry"),
        )
        self.registry_file.write_text(f"127.0.0.1:{port}\n")

    def _start_node_agent(self, state: dict, pki: PKI, creds: commands.Credentials) -> None:
        """The node agent registers the nodes and runs their pods; up ends when all are Ready."""
        o = self.options
        tls = pki.leaf("node-agent-serving", "capstan-node-agent", server=True, ips=("127.0.0.1",))
        mirror = f"127.0.0.1:{state['ports']['registry']}" if o.registry_storage is not None else ""
        argv = commands.node_agent(
            o, state["ports"], creds, self.state_dir / "pods", tls, mirror, self._bin("capstan-portforward")
        )
        repo = Path(__file__).resolve().parents[2]
        proc = self._spawn(state, "node-agent", argv, env={"PYTHONPATH": str(repo)})
        # A cold pull of the trainer image (gigabytes, unpacked once per digest) comes first.
        wait_until(
            f"{o.nodes} Ready nodes" + (f" (after pulling {', '.join(o.prepull)})" if o.prepull else ""),
            lambda: self._ready_nodes() >= o.nodes,
            o.start_deadline_s + (PREPULL_DEADLINE_S if o.prepull else 0),
            proc,
            self._log("node-agent"),
        )

    def _wait_for_default_service_account(self) -> None:
        """The controller-manager creates it; until then the API server refuses pods in `default`."""
        wait_until(
            "the default ServiceAccount",
            lambda: self._kubectl("get", "serviceaccount", "default", "-n", "default").returncode == 0,
            self.options.start_deadline_s,
        )

    def _kubectl(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["kubectl", f"--kubeconfig={self.kubeconfig}", *args], capture_output=True, text=True, timeout=30
        )

    def _ready_nodes(self) -> int:
        """Nodes the scheduler can use: Ready, and without the not-ready taint a node is registered
        with (the node lifecycle controller removes it some seconds after Ready; pods created
        before that all land on the other nodes)."""
        r = self._kubectl("get", "nodes", "-o", "json")
        if r.returncode != 0:
            return 0
        return sum(
            any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions") or [])
            and not any(t["key"] in UNSCHEDULABLE_TAINTS for t in n["spec"].get("taints") or [])
            for n in json.loads(r.stdout)["items"]
        )

    def healthy(self) -> bool:
        state = self._state()
        if not state or not self.kubeconfig.exists():
            return False
        if not all(_alive(pid) for pid in state.get("pids", {}).values()):
            return False
        return self._kubectl("get", "--raw", "/readyz").returncode == 0

    # ---- down ----------------------------------------------------------------------------------
    def down(self, quiet: bool = False, grace_s: float = 15.0) -> int:
        """Stop the node agent (which stops its pods), then the rest; then anything still
        carrying this cluster's marker. Returns how many processes were stopped."""
        state = self._state()
        if not state:
            return 0
        pids = state.get("pids", {})
        order = [
            "node-agent",
            "kube-scheduler",
            "kube-controller-manager",
            "kube-apiserver",
            "prometheus",
            "registry",
            "s3",
            "etcd",
        ]
        for name in order:
            pid = pids.get(name)
            if pid and _alive(pid):
                _signal_group(pid, signal.SIGTERM)
                end = time.monotonic() + grace_s
                while _alive(pid) and time.monotonic() < end:
                    time.sleep(0.1)
        marked = _marked_processes(state["id"])
        for pid in marked:
            _signal(pid, signal.SIGKILL)
        end = time.monotonic() + 10
        while any(_alive(p) for p in marked) and time.monotonic() < end:
            time.sleep(0.1)
        count = len([p for p in pids.values()]) + len(marked)
        shutil.rmtree(self.state_dir / "etcd", ignore_errors=True)
        shutil.rmtree(self.state_dir / "s3", ignore_errors=True)
        shutil.rmtree(self.state_dir / "prometheus", ignore_errors=True)
        shutil.rmtree(self.state_dir / "pods", ignore_errors=True)
        self.state_file.unlink(missing_ok=True)
        if not quiet:
            left = _marked_processes(state["id"])
            if left:
                print(f"warning: processes still running: {left}", file=sys.stderr)
        return count


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        _signal(pid, sig)


def _marked_processes(cluster_id: str) -> list[int]:
    """Live processes whose environment carries this cluster's marker."""
    needle = f"{MARKER}={cluster_id}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle in f.read().split(b"\0") and _alive(int(entry)):
                    found.append(int(entry))
        except OSError:
            continue
    return found
