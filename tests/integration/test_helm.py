"""The Helm chart: lint, rendering with default and non-default values, and a real install,
upgrade and uninstall on the local control plane (the node agent runs the operator pod as a
process from this environment)."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "capstan"
HELM = REPO / ".capstan" / "bin" / "helm"


@pytest.fixture(autouse=True)
def _helm_is_built():
    assert HELM.exists(), f"{HELM} is missing: run `make install` (hack/build-helm.sh builds it)"


def helm(*args: str, env: dict | None = None, check: bool = True, timeout: float = 180):
    r = subprocess.run([str(HELM), *args], capture_output=True, text=True, env=env, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({r.returncode}):\n{r.stderr}{r.stdout}")
    return r


def render(*sets: str, namespace: str = "capstan-system") -> dict[tuple[str, str, str], dict]:
    """(kind, namespace, name) -> object, for `helm template` with these --set values."""
    args = ["template", "capstan", str(CHART), "-n", namespace]
    for s in sets:
        args += ["--set", s]
    docs = [d for d in yaml.safe_load_all(helm(*args).stdout) if d]
    return {(d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]): d for d in docs}


def env_of(deployment: dict) -> dict[str, object]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_chart_lints_and_crds_are_the_generated_ones():
    helm("lint", str(CHART), "--strict")
    for crd in (REPO / "manifests" / "crds").glob("*.yaml"):
        assert (CHART / "crds" / crd.name).read_bytes() == crd.read_bytes(), crd.name


def test_default_values_render_a_cluster_wide_standalone_operator():
    objs = render()
    kinds = sorted(k for k, _, _ in objs)
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "Deployment", "Service", "ServiceAccount"]
    dep = objs[("Deployment", "capstan-system", "capstan")]
    pod = dep["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["python", "-m", "capstan_operator"]
    assert container["image"] == "capstan/operator:0.1.0"
    assert dep["spec"]["strategy"]["type"] == "Recreate"
    assert dep["spec"]["replicas"] == 1
    env = env_of(dep)
    assert env["CAPSTAN_NAMESPACES"] == "" and env["CAPSTAN_LEADER_ELECTION"] == "false"
    assert env["CAPSTAN_LOG_LEVEL"] == "INFO" and env["CAPSTAN_WORKLOAD_IMAGE"] == "capstan/trainer:0.1.0"
    # 0.0.0.0 in a pod of its own (port-forward works), the pod IP where it is loopback (local)
    assert "CAPSTAN_BIND_ADDRESS" not in env and env["POD_IP"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env["CAPSTAN_ARTIFACT_URI"] == "" and env["CAPSTAN_WORKLOAD_SERVICE_ACCOUNT"] == ""
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert "PodDisruptionBudget" not in kinds and "PodMonitor" not in kinds
    # Found by a kubernetes_sd_configs (role pod) job; canaries judged by direct scrape; no dashboard.
    assert dep["spec"]["template"]["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "9090",
        "prometheus.io/path": "/metrics",
    }
    assert env["CAPSTAN_PROMETHEUS_URL"] == "" and "ConfigMap" not in kinds
    assert "AWS_ACCESS_KEY_ID" not in env and "AWS_ENDPOINT_URL" not in env
    assert "CC0-1.0" in env["CAPSTAN_ALLOWED_LICENCES"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "liveness"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"liveness": 8080, "metrics": 9090}
    assert pod["serviceAccountName"] == "capstan"
    svc = objs[("Service", "capstan-system", "capstan-metrics")]
    assert svc["spec"]["ports"][0]["port"] == 9090


def code_permissions() -> dict[tuple[str, str], set[str]]:
    """(API group, resource) -> verbs, derived from the operator's code: every literal
    `kube.<fn>("<apiVersion>", "<Kind>"` call site, the kinds the builders apply (server-side
    apply is a patch, authorized as create too when the object is new), the custom-object and
    status calls, and what kopf watches."""
    import re

    from capstan_api import KINDS
    from capstan_operator import handlers

    verb = {"get": "get", "list_": "list", "delete": "delete", "patch": "patch", "create": "create"}
    verb |= {"replace": "update"}
    plural = {"Job": "jobs", "Pod": "pods", "ConfigMap": "configmaps", "Service": "services"}
    plural |= {"Deployment": "deployments", "HorizontalPodAutoscaler": "horizontalpodautoscalers"}
    plural |= {"Lease": "leases", "PodGroup": "podgroups", "Event": "events"}
    out: dict[tuple[str, str], set[str]] = {}

    def grant(group: str, resource: str, *verbs: str) -> None:
        out.setdefault((group, resource), set()).update(verbs)

    call = re.compile(r'kube\.(get|list_|delete|patch|create|replace)\("([^"]+)", "([^"]+)"')
    for path in (REPO / "operator").rglob("*.py"):
        for fn, api_version, kind in call.findall(path.read_text()):
            grant(api_version.rpartition("/")[0], plural[kind], verb[fn])
    for group, kind in (("", "ConfigMap"), ("", "Service"), ("batch", "Job"), ("apps", "Deployment")):
        grant(group, plural[kind], "create", "patch")  # kube.apply of what the builders return
    grant("autoscaling", "horizontalpodautoscalers", "create", "patch")
    grant("", "serviceaccounts", "create", "patch")  # identity.ensure_service_account: kube.apply
    grant("scheduling.volcano.sh", "podgroups", "create", "patch")  # kube.apply_custom
    grant("kueue.x-k8s.io", "workloads", "list")  # trainingrun/queue.py: kube.list_custom
    for info in KINDS.values():
        grant("capstan.dev", info.plural, "get", "list", "watch")  # get_custom, list_custom, kopf
        grant("capstan.dev", f"{info.plural}/status", "patch")  # patch_custom_status
        grant("capstan.dev", f"{info.plural}/finalizers", "update")  # blockOwnerDeletion
    for group, _, resource in handlers.CHILDREN:
        grant(group, resource, "list", "watch")  # kopf
    grant("", "pods/log", "get")  # kube.pod_log
    grant("", "nodes", "list")  # kube.list_nodes: the capacity plan's GPU memory
    grant("coordination.k8s.io", "leases", "create", "update")  # leader.py: kube.create / replace
    return out


def test_rbac_is_exactly_what_the_code_uses():
    def rules_of(objs, key):
        by_resource: dict[tuple[str, str], set[str]] = {}
        for rule in objs[key]["rules"]:
            for g in rule["apiGroups"]:
                for r in rule["resources"]:
                    by_resource.setdefault((g, r), set()).update(rule["verbs"])
        return by_resource

    used = code_permissions()
    lease = {k: used.pop(k) for k in [k for k in used if k[1] == "leases"]}
    granted = rules_of(render(), ("ClusterRole", "", "capstan"))
    granted.pop(("apiextensions.k8s.io", "customresourcedefinitions"))  # kopf's CRD discovery
    # Events: kube.post_event creates them (more verbs may come with aggregation); jobs.py
    # lists a Job's FailedCreate.
    for key in (("", "events"), ("events.k8s.io", "events")):
        verbs = granted.pop(key)
        assert "create" in verbs and used.pop(key, set()) <= verbs, (key, verbs)
    assert granted == used
    elected = render("leaderElection=true")
    assert rules_of(elected, ("Role", "capstan-system", "capstan-leader-election")) == lease


def test_non_default_values_render_namespaced_peering_operators():
    objs = render(
        "watchNamespaces={team-a,team-b}",
        "leaderElection=true",
        "replicas=2",
        "logLevel=DEBUG",
        "objectStorage.endpoint=http://127.0.0.1:9000",
        "objectStorage.credentialsSecret=s3-creds",
        "licences.allowed={MIT}",
        "workload.image=registry.local/workload:1",
        "workload.pullPolicy=Always",
        "metrics.port=9191",
        "serviceAccount.create=false",
        "serviceAccount.name=ops",
        "image.tag=v9",
        "workers=2",
    )
    dep = objs[("Deployment", "capstan-system", "capstan")]
    assert dep["spec"]["replicas"] == 2 and dep["spec"]["strategy"]["type"] == "RollingUpdate"
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "capstan/operator:v9"
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == "ops"
    env = env_of(dep)
    assert env["CAPSTAN_NAMESPACES"] == "team-a,team-b"
    assert env["CAPSTAN_LEADER_ELECTION"] == "true" and env["CAPSTAN_LOG_LEVEL"] == "DEBUG"
    assert env["CAPSTAN_S3_ENDPOINT"] == "http://127.0.0.1:9000" and env["CAPSTAN_S3_SECRET"] == "s3-creds"
    assert env["CAPSTAN_ALLOWED_LICENCES"] == "MIT" and env["CAPSTAN_METRICS_PORT"] == "9191"
    assert env["CAPSTAN_WORKLOAD_IMAGE"] == "registry.local/workload:1"
    assert env["CAPSTAN_IMAGE_PULL_POLICY"] == "Always"
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9000"
    assert env["AWS_ACCESS_KEY_ID"] == {"secretKeyRef": {"name": "s3-creds", "key": "AWS_ACCESS_KEY_ID"}}
    assert env["CAPSTAN_WORKERS"] == "2"
    assert not any(k == "ServiceAccount" for k, _, _ in objs)
    for ns in ("team-a", "team-b"):
        assert ("Role", ns, "capstan") in objs
        assert objs[("RoleBinding", ns, "capstan")]["subjects"][0]["name"] == "ops"
    # The leader-election Lease lives in the release's namespace, whatever is watched.
    lease_rules = objs[("Role", "capstan-system", "capstan-leader-election")]["rules"]
    assert lease_rules == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]}
    ]
    assert objs[("RoleBinding", "capstan-system", "capstan-leader-election")]["subjects"][0]["name"] == "ops"
    assert not any(k in ("KopfPeering", "ClusterKopfPeering") for k, _, _ in objs)
    cluster_rules = objs[("ClusterRole", "", "capstan")]["rules"]
    cluster_resources = {r for rule in cluster_rules for r in rule["resources"]}
    assert cluster_resources == {
        "customresourcedefinitions",
        "namespaces",
        "nodes",
    }  # nodes: the capacity plan


DIGEST = "sha256:" + "ab" * 32


def test_production_values_render_images_identity_placement_pdb_and_podmonitor():
    objs = render(
        "image.repository=registry.example/capstan/operator",
        f"image.digest={DIGEST}",
        "imagePullSecrets[0].name=regcred",
        "workload.image.repository=registry.example/capstan/trainer",
        "workload.image.tag=v2",
        f"workload.vllmImage.digest={DIGEST}",
        "workload.serviceAccountName=capstan-workload",
        "workload.nodeSelector.pool=ml",
        "workload.tolerations[0].key=dedicated",
        "workload.tolerations[0].operator=Exists",
        "artifactUri=s3://team-bucket/capstan",
        "objectStorage.region=eu-west-1",
        "serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::1:role/capstan",
        "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key=pool",
        "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator=Exists",
        "replicas=2",
        "leaderElection=true",
        "metrics.podMonitor.enabled=true",
    )
    dep = objs[("Deployment", "capstan-system", "capstan")]
    pod = dep["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == f"registry.example/capstan/operator:0.1.0@{DIGEST}"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["affinity"]["nodeAffinity"]
    env = env_of(dep)
    assert env["CAPSTAN_WORKLOAD_IMAGE"] == "registry.example/capstan/trainer:v2"
    assert env["CAPSTAN_VLLM_IMAGE"] == f"vllm/vllm-openai:v0.11.0@{DIGEST}"
    assert env["CAPSTAN_WORKLOAD_SERVICE_ACCOUNT"] == "capstan-workload"
    assert yaml.safe_load(env["CAPSTAN_WORKLOAD_PLACEMENT"]) == {
        "nodeSelector": {"pool": "ml"},
        "tolerations": [{"key": "dedicated", "operator": "Exists"}],
        "affinity": {},
    }
    assert env["CAPSTAN_ARTIFACT_URI"] == "s3://team-bucket/capstan"
    assert env["AWS_REGION"] == env["CAPSTAN_S3_REGION"] == "eu-west-1"
    sa = objs[("ServiceAccount", "capstan-system", "capstan")]
    assert sa["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/capstan"}
    pdb = objs[("PodDisruptionBudget", "capstan-system", "capstan")]
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    # The PodMonitor needs the Prometheus Operator's CRD: absent here, so not rendered.
    assert not any(k == "PodMonitor" for k, _, _ in objs)
    args = ["template", "capstan", str(CHART), "--set", "metrics.podMonitor.enabled=true"]
    out = helm(*args, "--api-versions", "monitoring.coreos.com/v1").stdout
    [monitor] = [d for d in yaml.safe_load_all(out) if d and d["kind"] == "PodMonitor"]
    assert monitor["spec"]["podMetricsEndpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "30s"}
    ]


def test_schema_rejects_bad_values_naming_the_key():
    args = ["template", "capstan", str(CHART), "--set"]
    r = helm(*args, "logLevel=LOUD", check=False)
    assert r.returncode != 0 and "logLevel" in r.stderr
    r = helm(*args, "metrics.port=0", check=False)
    assert r.returncode != 0 and "metrics/port" in r.stderr
    r = helm(*args, "watchNamespaces={Not_A_Namespace}", check=False)
    assert r.returncode != 0 and "watchNamespaces" in r.stderr
    r = helm(*args, "image.digest=latest", check=False)
    assert r.returncode != 0 and "image/digest" in r.stderr
    r = helm(*args, "artifactUri=/no/scheme", check=False)
    assert r.returncode != 0 and "artifactUri" in r.stderr
    r = helm(*args, "metrics.prometheusUrl=prometheus:9090", check=False)
    assert r.returncode != 0 and "metrics/prometheusUrl" in r.stderr


DATASET = textwrap.dedent("""\
    apiVersion: capstan.dev/v1alpha1
    kind: Dataset
    metadata: {name: via-helm}
    spec:
      sources: [{uri: "s3://corpus/*.jsonl", licence: CC0-1.0}]
      output: {uri: "s3://out/via-helm"}
    """)


def operator_pods(cluster, namespace: str) -> list[dict]:
    return cluster.list("pods", namespace, selector="app.kubernetes.io/component=operator")


def ready_pod(cluster, namespace: str) -> dict | None:
    """The single Ready, not terminating operator pod, or None."""
    pods = [p for p in operator_pods(cluster, namespace) if not p["metadata"].get("deletionTimestamp")]
    ready = [
        p
        for p in pods
        if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
    ]
    return ready[0] if len(pods) == 1 and ready else None


def wait_ready(cluster, namespace: str, check=None, what: str = "the operator pod to be Ready") -> dict:
    """Wait for a Ready operator pod; on timeout show the pods' description and the log."""
    try:
        return cluster.wait_for(what, check or (lambda: ready_pod(cluster, namespace)), timeout=180)
    except AssertionError as exc:
        described = cluster.kubectl("describe", "pods", "-n", namespace, check=False).stdout
        logs = cluster.kubectl("logs", "deploy/capstan", "-n", namespace, "--tail=30", check=False)
        raise AssertionError(f"{exc}\n{described[-3000:]}\n{logs.stdout}{logs.stderr}") from None


@pytest.mark.cluster
def test_install_upgrade_uninstall(cluster, namespace):
    env = cluster.env
    # Only MIT is allowed: the operator in the pod must refuse the CC0-1.0 Dataset below, which
    # shows the chart's values reached it (and no workload pod is started for it).
    release = ["capstan", str(CHART), "-n", namespace, "--set", f"watchNamespaces={{{namespace}}}"]
    release += ["--set", "licences.allowed={MIT}"]
    helm("install", *release, env=env)
    first = wait_ready(cluster, namespace)

    cluster.apply(DATASET, namespace)
    status = cluster.wait_for(
        "Dataset via-helm to be refused by the operator in the pod",
        lambda: (
            ((cluster.get("dataset", "via-helm", namespace) or {}).get("status") or {}).get("phase")
            == "Failed"
            and cluster.get("dataset", "via-helm", namespace)["status"]
        ),
        timeout=60,
    )
    assert any(c["type"] == "LicenseNotAllowed" and c["status"] == "True" for c in status["conditions"])
    assert "CC0-1.0 is not allowed" in status["message"]

    helm("upgrade", *release, "--set", "logLevel=DEBUG", "--wait", "--timeout", "180s", env=env)

    def restarted():
        pod = ready_pod(cluster, namespace)
        return pod if pod and pod["metadata"]["name"] != first["metadata"]["name"] else None

    second = wait_ready(cluster, namespace, restarted, "a new operator pod after the upgrade")
    env_vars = {e["name"]: e.get("value") for e in second["spec"]["containers"][0]["env"]}
    assert env_vars["CAPSTAN_LOG_LEVEL"] == "DEBUG"
    cluster.wait_for(
        "debug lines in the new operator's log",
        lambda: (
            '"severity": "debug"'
            in cluster.kubectl("logs", second["metadata"]["name"], "-n", namespace).stdout
        ),
    )

    helm("uninstall", "capstan", "-n", namespace, "--wait", "--timeout", "180s", env=env)
    cluster.wait_for("the operator pods to go", lambda: operator_pods(cluster, namespace) == [], timeout=90)
    assert cluster.get("deployment.apps", "capstan", namespace) is None
    crds = cluster.kubectl("get", "crd", "-o", "name").stdout
    assert "customresourcedefinition.apiextensions.k8s.io/datasets.capstan.dev" in crds
    assert cluster.get("dataset", "via-helm", namespace)["status"]["phase"] == "Failed"


@pytest.mark.cluster
@pytest.mark.parametrize("example", sorted(p.name for p in (CHART / "examples").glob("values-*.yaml")))
def test_example_values_render_and_the_api_server_accepts_them(cluster, namespace, example):
    """docs/install.md's values files: helm template, then a server-side dry run (the API
    server's own validation and defaulting of every object, nothing created)."""
    args = ["template", "capstan", str(CHART), "-n", namespace, "-f", str(CHART / "examples" / example)]
    rendered = helm(*args).stdout
    kinds = {d["kind"] for d in yaml.safe_load_all(rendered) if d}
    assert {"Deployment", "ServiceAccount"} <= kinds, kinds
    r = cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=rendered, check=False)
    assert r.returncode == 0, f"{example} refused by the API server:\n{r.stderr}"
    assert "deployment.apps/capstan created (server dry run)" in r.stdout
    assert cluster.get("deployment.apps", "capstan", namespace) is None  # nothing was created


def without_storage_field(crd_text: str) -> str:
    """The TrainingRun CRD as a release before spec.storage had it."""
    crd = yaml.safe_load(crd_text)
    for version in crd["spec"]["versions"]:
        version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"].pop("storage")
    return yaml.safe_dump(crd)


@pytest.mark.cluster
def test_a_crd_upgrade_applied_server_side_before_helm_upgrade_makes_the_new_field_usable(
    cluster, capstan_crds, namespace
):
    crd_file = CHART / "crds" / "trainingruns.capstan.dev.yaml"
    crd = "crd/trainingruns.capstan.dev"
    env = cluster.env
    # An older release: its CRD has no spec.storage, and the API server prunes the field.
    cluster.kubectl("apply", "-f", "-", input=without_storage_field(crd_file.read_text()))
    release = ["capstan", str(CHART), "-n", namespace, "--set", f"watchNamespaces={{{namespace}}}"]
    release += ["--set", "replicas=0"]  # the CRDs are what is tested; no operator pod is needed
    helm("install", *release, env=env)
    run = yaml.safe_load((REPO / "manifests" / "examples" / "trainingrun.yaml").read_text())
    run["metadata"] = {"name": "upgraded", "namespace": namespace}
    run["spec"]["suspend"] = True
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(run))  # made under the old CRD
    run["spec"]["storage"] = {"secretName": "team-s3"}

    def stored_storage():
        r = cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(run), check=False)
        if r.returncode != 0:
            return None
        return (cluster.get("trainingrun", "upgraded", namespace) or {})["spec"].get("storage")

    r = cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(run), check=False)
    assert r.returncode != 0 and 'unknown field "spec.storage"' in r.stderr, r.stderr

    # The documented path: CRDs server-side first, then helm upgrade.
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", crd, timeout=90)
    helm("upgrade", *release, "--set", "logLevel=DEBUG", env=env)
    # The API server serves the new schema a moment after the update.
    stored = cluster.wait_for("spec.storage to be kept after the CRD upgrade", stored_storage, timeout=30)
    assert stored == {"secretName": "team-s3"}
    helm("uninstall", "capstan", "-n", namespace, env=env)


def resource_status(cluster, kind: str, name: str, namespace: str) -> dict:
    return ((cluster.get(kind, name, namespace) or {}).get("status")) or {}


@pytest.mark.cluster
def test_a_run_and_an_evaluation_without_uris_succeed_under_the_charts_artifact_uri(
    cluster, capstan_crds, namespace, s3_server, s3_bucket, tiny
):
    """artifactUri from the chart: a TrainingRun without checkpoint.uri and an Evaluation of it
    without outputUri write under <artifactUri>/<namespace>/<name>/, the operator running in its
    pod with the object-storage endpoint and Secret the chart gave it."""
    from capstan_trainer import storage
    from tests.integration.test_reconcile_evaluation import evaluation_yaml
    from tests.support.trainingruns import run_yaml

    artifacts = f"{s3_bucket}/artifacts"
    cluster.create_s3_secret("s3-creds", namespace, s3_server.env)
    release = ["capstan", str(CHART), "-n", namespace, "--set", f"watchNamespaces={{{namespace}}}"]
    release += ["--set", f"artifactUri={artifacts}", "--set", f"objectStorage.endpoint={s3_server.endpoint}"]
    release += ["--set", "objectStorage.credentialsSecret=s3-creds"]
    helm("install", *release, env=cluster.env)
    wait_ready(cluster, namespace)

    checkpoint = {"intervalSteps": 2, "keepLast": 2}  # no uri
    cluster.apply(run_yaml("run", "", {"uri": tiny.dataset_uri}, steps=4, checkpoint=checkpoint), namespace)
    ev = yaml.safe_load(evaluation_yaml("ev", "", [], model={"trainingRunRef": {"name": "run"}}))
    del ev["spec"]["outputUri"]
    ev["spec"]["validationUri"] = tiny.dataset_uri
    cluster.apply(yaml.safe_dump(ev), namespace)
    cluster.wait_for(
        "Evaluation ev (of TrainingRun run) to finish",
        lambda: (
            resource_status(cluster, "evaluation", "ev", namespace).get("phase") in ("Succeeded", "Failed")
        ),
        timeout=420,
    )
    ev_status = resource_status(cluster, "evaluation", "ev", namespace)
    assert ev_status["phase"] == "Succeeded", ev_status
    run = resource_status(cluster, "trainingrun", "run", namespace)
    assert run["phase"] == "Succeeded" and run["step"] == 4, run
    assert run["outputUri"] == f"{artifacts}/{namespace}/run/checkpoints", run
    assert run["lastCheckpoint"]["uri"].startswith(f"{artifacts}/{namespace}/run/checkpoints/"), run
    assert ev_status["modelUri"] == run["lastCheckpoint"]["uri"]
    assert ev_status["resultsUri"] == f"{artifacts}/{namespace}/ev/evaluation/results.json", ev_status
    assert storage.read_bytes(ev_status["modelCardUri"]).startswith(b"---")
    helm("uninstall", "capstan", "-n", namespace, "--wait", "--timeout", "180s", env=cluster.env)


CAPACITY_LABEL = "eks.amazonaws.com/capacityType"


@pytest.mark.cluster
def test_an_install_with_the_eks_values_runs_two_operators_from_registry_digests(
    cluster, capstan_crds, namespace
):
    """docs/install.md's EKS values installed for real, with this cluster's registry in place of
    ECR and the images pinned by the digests `make images` pushed: both replicas (on nodes with
    the values' nodeSelector label) run as the IRSA-annotated ServiceAccount behind a PDB, one
    holds the leader Lease and reconciles (a GPL Dataset is refused by the licence policy)."""
    import json

    pushed = json.loads((REPO / ".capstan" / "images" / "pushed.json").read_text())
    registry = cluster.cluster.registry_file.read_text().strip()
    operator_image = f"{registry}/capstan/operator"
    release = ["capstan", str(CHART), "-n", namespace, "-f", str(CHART / "examples" / "values-eks.yaml")]
    release += ["--set", f"watchNamespaces={{{namespace}}}"]
    release += [
        "--set",
        f"image.repository={operator_image}",
        "--set",
        f"image.digest={pushed['operator']['digest']}",
    ]
    release += ["--set", f"workload.image.repository={registry}/capstan/trainer"]
    release += ["--set", f"workload.image.digest={pushed['trainer']['digest']}"]
    cluster.kubectl("label", "nodes", "--all", f"{CAPACITY_LABEL}=ON_DEMAND", "--overwrite")
    try:
        helm("install", *release, env=cluster.env)

        def two_ready():
            pods = [
                p for p in operator_pods(cluster, namespace) if not p["metadata"].get("deletionTimestamp")
            ]
            ready = [
                p
                for p in pods
                if any(
                    c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", [])
                )
            ]
            return ready if len(ready) == 2 else None

        pods = wait_ready(cluster, namespace, two_ready, "both operator replicas to be Ready")
        for pod in pods:
            spec = pod["spec"]
            assert spec["containers"][0]["image"] == f"{operator_image}:0.1.0@{pushed['operator']['digest']}"
            assert (
                spec["nodeSelector"] == {CAPACITY_LABEL: "ON_DEMAND"}
                and spec["serviceAccountName"] == "capstan"
            )
        env = {e["name"]: e.get("value") for e in pods[0]["spec"]["containers"][0]["env"]}
        assert (
            env["CAPSTAN_WORKLOAD_IMAGE"] == f"{registry}/capstan/trainer:0.1.0@{pushed['trainer']['digest']}"
        )
        assert env["CAPSTAN_ARTIFACT_URI"] == "s3://my-ml-bucket/capstan"
        sa = cluster.get("serviceaccount", "capstan", namespace)
        assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith(":role/capstan-operator")
        assert cluster.get("poddisruptionbudget", "capstan", namespace)["spec"]["minAvailable"] == 1
        lease = cluster.wait_for(
            "the leader Lease capstan-operator",
            lambda: ((cluster.get("lease", "capstan-operator", namespace) or {}).get("spec") or {}).get(
                "holderIdentity"
            ),
            timeout=60,
        )
        assert lease.rpartition("_")[0] in {p["metadata"]["name"] for p in pods}, lease  # <hostname>_<id>

        cluster.apply(DATASET.replace("CC0-1.0", "GPL-3.0-only"), namespace)
        status = cluster.wait_for(
            "Dataset via-helm to be refused by the elected operator",
            lambda: (
                (s := resource_status(cluster, "dataset", "via-helm", namespace)).get("phase") == "Failed"
                and s
            ),
            timeout=60,
        )
        assert "GPL-3.0-only is not allowed" in status["message"], status
        helm("uninstall", "capstan", "-n", namespace, "--wait", "--timeout", "180s", env=cluster.env)
    finally:
        cluster.kubectl("label", "nodes", "--all", f"{CAPACITY_LABEL}-")
