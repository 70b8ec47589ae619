"""Kueue on the local control plane: its controller manager (cmd/kueue, built into .capstan/bin by
hack/build-kueue.sh) as a process on loopback, its CRDs and webhook configurations read from the
module's config/components (what its kustomize overlay would install), rewritten to call the
webhook server at https://127.0.0.1:<port> with a certificate from the cluster's CA: the API
server cannot reach a Service here (ClusterIPs are not routed on this machine).

Only the batch/v1 Job integration is enabled, and only the webhooks Kueue serves for it and for
its own resources are installed: the base manifests also register Pod, Deployment and
StatefulSet webhooks with failurePolicy Fail, which would refuse every pod of the cluster."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from hack.localcluster.cluster import wait_until
from hack.localcluster.pki import PKI
from hack.localcluster.ports import free_port

MODULE = "sigs.k8s.io/kueue"
GO_MODULE_DIR = Path(__file__).resolve().parents[1] / "kueue"
"""GO_MODULE_DIR: the wrapper module that pins Kueue's version (hack/kueue/go.mod)."""
CONVERTED = ("localqueues", "clusterqueues", "cohorts", "workloads", "multikueueclusters")
"""CONVERTED: the CRDs whose v1beta1 <-> v1beta2 conversion the webhook serves (the
webhook_in_* patches of config/components/crd/kustomization.yaml)."""
WEBHOOK_GROUPS = ("kueue.x-k8s.io", "batch")
"""WEBHOOK_GROUPS: API groups whose webhooks are installed (Kueue's own kinds, batch/v1 Job)."""
FRAMEWORKS = ("batch/job",)
WEBHOOK_NAMES = ("kueue-mutating-webhook-configuration", "kueue-validating-webhook-configuration")
SYSTEM_NAMESPACE = "kueue-system"


def module_dir() -> Path:
    """Where the Go module cache holds the pinned Kueue release (downloaded if missing)."""
    out = subprocess.run(
        ["go", "mod", "download", "-json", MODULE],
        cwd=GO_MODULE_DIR,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    return Path(json.loads(out)["Dir"])


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def crds(module: Path, url: str, ca_pem: bytes) -> list[dict]:
    """Every CRD of config/components/crd/bases; the CONVERTED ones call the webhook's /convert."""
    import base64

    out = []
    for path in sorted((module / "config/components/crd/bases").glob("*.yaml")):
        for crd in _docs(path):
            if crd["spec"]["names"]["plural"] in CONVERTED:
                crd["spec"]["conversion"] = {
                    "strategy": "Webhook",
                    "webhook": {
                        "clientConfig": {
                            "url": f"{url}/convert",
                            "caBundle": base64.b64encode(ca_pem).decode(),
                        },
                        "conversionReviewVersions": ["v1"],
                    },
                }
            out.append(crd)
    return out


def webhooks(module: Path, url: str, ca_pem: bytes) -> list[dict]:
    """The mutating and validating webhook configurations, limited to WEBHOOK_GROUPS, each
    calling `url` + its path; namespaced objects of kube-system and kueue-system are left alone
    (as Kueue's overlay does)."""
    import base64

    ca = base64.b64encode(ca_pem).decode()
    out = []
    for doc in _docs(module / "config/components/webhook/manifests.yaml"):
        cfg = copy.deepcopy(doc)
        cfg["metadata"] = {"name": f"kueue-{doc['metadata']['name']}"}
        kept = []
        for hook in cfg.get("webhooks") or []:
            groups = {g for rule in hook.get("rules") or [] for g in rule.get("apiGroups") or []}
            if not groups or not groups <= set(WEBHOOK_GROUPS):
                continue
            path = hook["clientConfig"]["service"]["path"]
            hook["clientConfig"] = {"url": f"{url}{path}", "caBundle": ca}
            if "batch" in groups:
                hook["namespaceSelector"] = {
                    "matchExpressions": [
                        {
                            "key": "kubernetes.io/metadata.name",
                            "operator": "NotIn",
                            "values": ["kube-system", SYSTEM_NAMESPACE],
                        }
                    ]
                }
            kept.append(hook)
        cfg["webhooks"] = kept
        out.append(cfg)
    return out


def config(ports: dict[str, int], cert_dir: Path, wait_for_pods_ready_s: int | None) -> dict:
    """Kueue's Configuration (config.kueue.x-k8s.io/v1beta2): every port on loopback, no leader
    election, certificates from `cert_dir` instead of its internal rotator (which writes a
    Secret and patches webhook configurations that name a Service), the Job integration only,
    and waitForPodsReady when `wait_for_pods_ready_s` is set: an admitted workload whose pods are
    not all Ready by then is evicted (suspended) and requeued."""
    out: dict = {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": SYSTEM_NAMESPACE,
        "health": {"healthProbeBindAddress": f"127.0.0.1:{ports['health']}"},
        "metrics": {"bindAddress": f"127.0.0.1:{ports['metrics']}"},
        "webhook": {"host": "127.0.0.1", "port": ports["webhook"], "certDir": str(cert_dir)},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "integrations": {"frameworks": list(FRAMEWORKS)},
    }
    if wait_for_pods_ready_s is not None:
        out["waitForPodsReady"] = {
            "timeout": f"{wait_for_pods_ready_s}s",
            # Other workloads are admitted meanwhile: the gangs here never share nodes by accident.
            "blockAdmission": False,
            "requeuingStrategy": {"timestamp": "Eviction", "backoffBaseSeconds": 5, "backoffMaxSeconds": 30},
        }
    return out


METRICS_CERTS = "/etc/kueue/metrics/certs"
"""METRICS_CERTS: where Kueue reads its metrics server's certificate when its internal cert
management is off (fixed in cmd/kueue/main.go; it exits if the files are missing)."""


def command(binary: str, config_path: Path, cert_dir: Path) -> list[str]:
    """The manager in a mount namespace of its own where `cert_dir` is bind-mounted over
    METRICS_CERTS: several clusters on one machine each serve their own certificate, and
    nothing is written under /etc but the empty mount point."""
    # The visibility API server would bind :8082 on every address; nothing here uses it.
    kueue = [binary, f"--config={config_path}", "--feature-gates=VisibilityOnDemand=false"]
    mount = f'mount --bind "$0" {METRICS_CERTS} && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", mount, str(cert_dir), *kueue]


def ready(port: int) -> bool:
    """The manager's readiness probe (200 once the webhook server serves)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@dataclass
class Kueue:
    """Kueue installed into the cluster whose admin kubeconfig and PKI folder are given."""

    binary: Path
    kubeconfig: Path
    pki_dir: Path
    work_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    """env: extra environment of the process (the local cluster's marker, so `down` stops it)."""
    wait_for_pods_ready_s: int | None = None
    process: subprocess.Popen | None = None
    ports: dict[str, int] = field(default_factory=dict)

    def kubectl(self, *args: str, input: str | None = None) -> str:
        r = subprocess.run(
            ["kubectl", f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            input=input,
            timeout=120,
        )
        if r.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed ({r.returncode}): {r.stderr}{r.stdout}")
        return r.stdout

    def start(self, deadline_s: float = 120.0) -> None:
        """Certificates, CRDs and webhooks applied, the manager started and Ready."""
        if not self.binary.exists():
            raise FileNotFoundError(f"{self.binary} is missing: run `make install` (hack/build-kueue.sh)")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.ports = {name: free_port() for name in ("webhook", "health", "metrics")}
        pki = PKI(self.pki_dir)
        crt, key = pki.leaf(
            "kueue-webhook", "kueue-webhook", server=True, ips=("127.0.0.1",), dns=("localhost",)
        )
        cert_dir = self.work_dir / "certs"
        cert_dir.mkdir(exist_ok=True)
        (cert_dir / "tls.crt").write_bytes(crt.read_bytes())
        (cert_dir / "tls.key").write_bytes(key.read_bytes())
        module = module_dir()
        url = f"https://127.0.0.1:{self.ports['webhook']}"
        ca = pki.ca_cert_path.read_bytes()
        docs = crds(module, url, ca)
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=_list(docs))
        names = [f"crd/{d['metadata']['name']}" for d in docs]
        self.kubectl("wait", "--for=condition=Established", "--timeout=60s", *names)
        self.kubectl("apply", "-f", "-", input=_list([_namespace(SYSTEM_NAMESPACE)]))
        Path(METRICS_CERTS).mkdir(parents=True, exist_ok=True)
        cfg = self.work_dir / "config.yaml"
        cfg.write_text(yaml.safe_dump(config(self.ports, cert_dir, self.wait_for_pods_ready_s)))
        log = self.work_dir / "kueue.log"
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), **self.env}
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                command(str(self.binary), cfg, cert_dir),
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        wait_until(
            f"Kueue's /readyz on 127.0.0.1:{self.ports['health']}",
            lambda: ready(self.ports["health"]),
            deadline_s,
            self.process,
            log,
        )
        # Webhooks last: registered before the server answers, they would refuse every Job.
        self.kubectl("apply", "-f", "-", input=_list(webhooks(module, url, ca)))

    def ensure(self) -> str:
        """Start Kueue unless the one this work_dir's config names still answers (`up` run
        again); returns where its log is."""
        cfg = self.work_dir / "config.yaml"
        if cfg.exists():
            port = int(yaml.safe_load(cfg.read_text())["health"]["healthProbeBindAddress"].rsplit(":", 1)[1])
            if ready(port):
                return f"already running, log {self.work_dir / 'kueue.log'}"
        self.start()
        return f"webhooks on 127.0.0.1:{self.ports['webhook']}, log {self.work_dir / 'kueue.log'}"

    def stop(self, grace_s: float = 10.0) -> None:
        """Webhook configurations first (without the server they would refuse every Job), then
        the process. The CRDs and their objects stay."""
        self.kubectl(
            "delete",
            "mutatingwebhookconfiguration,validatingwebhookconfiguration",
            *WEBHOOK_NAMES,
            "--ignore-not-found",
        )
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _namespace(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def _list(items: list[dict]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
