"""Start and stop the local control plane. Every process it starts (and every process those
start) carries CAPSTAN_LOCALCLUSTER=<id> in its environment, so `down` can find and stop all of
them, pods included, even if a parent died first."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from hack.localcluster.kubeconfig import write_kubeconfig
from hack.localcluster.pki import PKI

SERVICE_CIDR = "10.96.0.0/16"  # allocated by the API server, never connected to
ISSUER = "https://kubernetes.default.svc.cluster.local"
MARKER = "CAPSTAN_LOCALCLUSTER"


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
    start_deadline_s: float = 120.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
        self.state_file = self.state_dir / "state.json"

    # ---- state -------------------------------------------------------------------------------
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
        log = self.state_dir / "logs" / f"{name}.log"
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

    # ---- up ------------------------------------------------------------------------------------
    def up(self) -> None:
        if self.healthy():
            print(f"already running ({self.kubeconfig})")
            return
        self.down(quiet=True)
        o = self.options
        (self.state_dir / "logs").mkdir(parents=True, exist_ok=True)
        pki = PKI(self.root / "pki")  # kept across restarts: a warm start skips key generation
        state = {
            "id": uuid.uuid4().hex,
            "ports": {n: free_port() for n in ("etcd", "etcd_peer", "api", "cm", "sched", "agent", "s3")},
        }
        ports = state["ports"]
        self._save(state)
        api_url = f"https://127.0.0.1:{ports['api']}"

        # ---- certificates and kubeconfigs
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
        kcs = {}
        for name, cn, orgs in (
            ("admin", "capstan-admin", ("system:masters",)),
            ("controller-manager", "system:kube-controller-manager", ()),
            ("scheduler", "system:kube-scheduler", ()),
            ("node-agent", "capstan-node-agent", ("system:masters",)),
        ):
            crt, key = pki.leaf(name, cn, orgs)
            path = self.kubeconfig if name == "admin" else self.state_dir / f"{name}.kubeconfig"
            write_kubeconfig(path, api_url, pki.ca_cert_path, crt, key, user=name)
            kcs[name] = path

        # ---- etcd
        etcd_log = self.state_dir / "logs" / "etcd.log"
        etcd = self._spawn(
            state,
            "etcd",
            [
                self._bin("etcd"),
                "--name=capstan",
                f"--data-dir={self.state_dir / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{ports['etcd']}",
                f"--advertise-client-urls=http://127.0.0.1:{ports['etcd']}",
                f"--listen-peer-urls=http://127.0.0.1:{ports['etcd_peer']}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{ports['etcd_peer']}",
                f"--initial-cluster=capstan=http://127.0.0.1:{ports['etcd_peer']}",
                "--unsafe-no-fsync",
                "--log-level=warn",
                "--quota-backend-bytes=4294967296",
            ],
        )
        wait_until(
            "etcd /health",
            lambda: (
                b'"health":"true"'
                in urllib.request.urlopen(f"http://127.0.0.1:{ports['etcd']}/health", timeout=2).read()
            ),
            o.start_deadline_s,
            etcd,
            etcd_log,
        )

        # ---- kube-apiserver
        d = pki.folder
        api_log = self.state_dir / "logs" / "kube-apiserver.log"
        api = self._spawn(
            state,
            "kube-apiserver",
            [
                self._bin("kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
                f"--secure-port={ports['api']}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--tls-cert-file={serving[0]}",
                f"--tls-private-key-file={serving[1]}",
                f"--client-ca-file={d / 'ca.crt'}",
                "--authorization-mode=Node,RBAC",
                f"--service-account-issuer={ISSUER}",
                f"--api-audiences={ISSUER}",
                f"--service-account-key-file={d / 'sa.pub'}",
                f"--service-account-signing-key-file={sa_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allow-privileged=true",
                f"--kubelet-client-certificate={kubelet_client[0]}",
                f"--kubelet-client-key={kubelet_client[1]}",
                "--kubelet-preferred-address-types=InternalIP",
                # Endpoints may not hold loopback addresses; nothing here needs the reconciler.
                "--endpoint-reconciler-type=none",
                "--profiling=false",
                "--max-requests-inflight=1000",
                "--max-mutating-requests-inflight=500",
            ],
        )
        ctx = ssl.create_default_context(cafile=str(d / "ca.crt"))
        ctx.load_cert_chain(str(self.root / "pki" / "admin.crt"), str(self.root / "pki" / "admin.key"))
        wait_until(
            "kube-apiserver /readyz",
            lambda: urllib.request.urlopen(f"{api_url}/readyz", context=ctx, timeout=3).status == 200,
            o.start_deadline_s,
            api,
            api_log,
        )

        # ---- controller-manager and scheduler
        self._spawn(
            state,
            "kube-controller-manager",
            [
                self._bin("kube-controller-manager"),
                f"--kubeconfig={kcs['controller-manager']}",
                f"--authentication-kubeconfig={kcs['controller-manager']}",
                f"--authorization-kubeconfig={kcs['controller-manager']}",
                f"--secure-port={ports['cm']}",
                "--bind-address=127.0.0.1",
                f"--service-account-private-key-file={sa_key}",
                f"--root-ca-file={d / 'ca.crt'}",
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
            ],
        )
        sched_cfg = self.state_dir / "scheduler.yaml"
        sched_cfg.write_text(
            "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n"
            f"clientConnection:\n  kubeconfig: {kcs['scheduler']}\n  qps: 200\n  burst: 400\n"
            "leaderElection:\n  leaderElect: false\n"
        )
        self._spawn(
            state,
            "kube-scheduler",
            [
                self._bin("kube-scheduler"),
                f"--config={sched_cfg}",
                f"--secure-port={ports['sched']}",
                "--bind-address=127.0.0.1",
                f"--authentication-kubeconfig={kcs['scheduler']}",
                f"--authorization-kubeconfig={kcs['scheduler']}",
            ],
        )

        # ---- S3 and the node agent
        s3_env = {}
        if o.s3:
            s3_env = {
                "AWS_ENDPOINT_URL": f"http://127.0.0.1:{ports['s3']}",
                "AWS_ACCESS_KEY_ID": "capstan",
                "AWS_SECRET_ACCESS_KEY": "capstan-secret",
                "AWS_REGION": "us-east-1",
            }
            s3_log = self.state_dir / "logs" / "s3.log"
            moto = self._spawn(
                state,
                "s3",
                # The module form works in thin worktree venvs too (no moto_server script there).
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(ports["s3"])],
            )
            wait_until(
                "moto S3 server",
                lambda: (
                    urllib.request.urlopen(f"{s3_env['AWS_ENDPOINT_URL']}/moto-api/", timeout=2).status == 200
                ),
                o.start_deadline_s,
                moto,
                s3_log,
            )
            self.s3_env_file.write_text("".join(f"{k}={v}\n" for k, v in s3_env.items()))
        agent_log = self.state_dir / "logs" / "node-agent.log"
        agent_cmd = [
            sys.executable,
            "-m",
            "hack.localcluster.nodeagent",
            f"--kubeconfig={kcs['node-agent']}",
            f"--state-dir={self.state_dir / 'pods'}",
            f"--nodes={o.nodes}",
            f"--gpus-per-node={o.gpus_per_node}",
            f"--cpus-per-node={o.cpus_per_node}",
            f"--memory-per-node={o.memory_per_node}",
            f"--port={ports['agent']}",
            f"--api-port={ports['api']}",
            f"--tls-cert={pki.leaf('node-agent-serving', 'capstan-node-agent', server=True, ips=('127.0.0.1',))[0]}",
            f"--tls-key={self.root / 'pki' / 'node-agent-serving.key'}",
        ]
        if o.simulate:
            agent_cmd.append("--simulate")
        agent = subprocess.Popen  # for type checkers
        agent = self._spawn(
            state, "node-agent", agent_cmd, env={"PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        )
        wait_until(
            f"{o.nodes} Ready nodes",
            lambda: self._ready_nodes() >= o.nodes,
            o.start_deadline_s,
            agent,
            agent_log,
        )
        wait_until(
            "the default ServiceAccount",
            lambda: self._kubectl("get", "serviceaccount", "default", "-n", "default").returncode == 0,
            o.start_deadline_s,
        )

    def _kubectl(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["kubectl", f"--kubeconfig={self.kubeconfig}", *args], capture_output=True, text=True, timeout=30
        )

    def _ready_nodes(self) -> int:
        r = self._kubectl(
            "get",
            "nodes",
            "-o",
            "jsonpath={range .items[*]}{.status.conditions[?(@.type=='Ready')].status}{'\\n'}{end}",
        )
        return r.stdout.split().count("True") if r.returncode == 0 else 0

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
        order = ["node-agent", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "s3", "etcd"]
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
