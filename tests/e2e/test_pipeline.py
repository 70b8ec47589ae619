"""The whole pipeline, as `make demo` runs it: the operator installed with its Helm chart (its pod
run by the node agent), the bundled corpus and conversations in the cluster's S3,
manifests/examples/pipeline.yaml applied unchanged, each resource reaching its final phase after
the ones it names, the fine-tuned model answering the held-out questions (the base model not), and
a held-out question answered right by the deployed assistant through its in-cluster URL, from a pod."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from capstan_operator import prometheus as client
from hack.upload_corpus import s3_client, upload_corpus
from tests.support.dashboard import panel_queries

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]

REPO = Path(__file__).resolve().parents[2]
PIPELINE = REPO / "manifests" / "examples" / "pipeline.yaml"
CHART = REPO / "charts" / "capstan"
HELM = REPO / ".capstan" / "bin" / "helm"
SECRET = "capstan-s3"
HELD_OUT = REPO / "manifests" / "examples" / "chat" / "heldout.jsonl"
# (resource, name, final phase, what it names: it finishes after those).
CHAIN = [
    ("datasets", "demo-stories", "Ready", []),
    ("datasets", "demo-conversations", "Ready", ["datasets/demo-stories"]),
    ("trainingruns", "demo-base", "Succeeded", ["datasets/demo-stories"]),
    (
        "trainingruns",
        "demo-assistant",
        "Succeeded",
        ["trainingruns/demo-base", "datasets/demo-conversations"],
    ),
    ("evaluations", "demo-base", "Succeeded", ["trainingruns/demo-base"]),
    ("evaluations", "demo-assistant", "Succeeded", ["trainingruns/demo-assistant", "evaluations/demo-base"]),
    ("deployments", "demo-chat", "Available", ["evaluations/demo-assistant"]),
]
PIPELINE_DEADLINE_S = 900  # about 4 min on an idle 2-core machine; several times that when loaded


# `kubectl run` flags that make the chat client's pod meet "restricted".
RESTRICTED_RUN = [
    "--override-type=strategic",
    "--overrides="
    + json.dumps(
        {
            "spec": {
                "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [
                    {
                        "name": "chat-client",
                        "securityContext": {
                            "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]},
                        },
                    }
                ],
            }
        }
    ),
]


def read_s3(uri: str) -> bytes:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()


def helm(*args: str, env: dict) -> None:
    r = subprocess.run([str(HELM), *args], capture_output=True, text=True, env=env, timeout=240)
    assert r.returncode == 0, f"helm {' '.join(args)} failed ({r.returncode}):\n{r.stderr}{r.stdout}"


@pytest.fixture
def operator(cluster, namespace, monkeypatch):
    """The corpus uploaded and the operator installed by Helm, watching only this namespace."""
    assert HELM.exists(), f"{HELM} is missing: run `make install` (hack/build-helm.sh builds it)"
    env = cluster.env
    for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
        monkeypatch.setenv(k, env[k])
    upload_corpus("s3://capstan-demo/corpus")
    upload_corpus("s3://capstan-demo/chat", HELD_OUT.parent)
    # The whole pipeline runs where Pod Security "restricted" is enforced.
    cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    cluster.create_s3_secret(SECRET, namespace, env)
    release = ["capstan-e2e", str(CHART), "-n", namespace]
    sets = [
        f"watchNamespaces={{{namespace}}}",
        f"objectStorage.endpoint={env['AWS_ENDPOINT_URL']}",
        f"objectStorage.credentialsSecret={SECRET}",
    ]
    helm(
        "install", *release, *(a for s in sets for a in ("--set", s)), "--wait", "--timeout", "180s", env=env
    )
    yield
    helm("uninstall", "capstan-e2e", "-n", namespace, "--wait", "--timeout", "120s", env=env)


def status_of(cluster, resource: str, name: str, namespace: str) -> dict:
    return (cluster.get(resource, name, namespace) or {}).get("status") or {}


def describe_failure(cluster, namespace: str, resource: str, name: str) -> str:
    described = cluster.kubectl("describe", resource, name, "-n", namespace, check=False).stdout
    table = cluster.kubectl("get", "capstan", "-n", namespace, check=False).stdout
    return f"{table}\n{described[-4000:]}"


def watch_pipeline(cluster, namespace: str) -> tuple[list[str], dict[str, list[str]]]:
    """Poll until the Deployment is Available; returns the order the resources finished in
    ("kind/name") and the phases each one was seen in. Fails at once, with the description, when
    any one fails."""
    finished: list[str] = []
    seen: dict[str, list[str]] = {f"{r}/{n}": [] for r, n, _, _ in CHAIN}
    end = time.monotonic() + PIPELINE_DEADLINE_S
    while len(finished) < len(CHAIN):
        for resource, name, final, _ in CHAIN:
            key, kind = f"{resource}/{name}", f"{resource}.capstan.dev"
            phase = status_of(cluster, kind, name, namespace).get("phase", "")
            if phase and (not seen[key] or seen[key][-1] != phase):
                seen[key].append(phase)
            if phase == "Failed":
                pytest.fail(f"{key} failed:\n{describe_failure(cluster, namespace, kind, name)}")
            if phase == final and key not in finished:
                finished.append(key)
        if time.monotonic() > end:
            waiting = next(f"{r}/{n}" for r, n, _, _ in CHAIN if f"{r}/{n}" not in finished)
            resource, name = waiting.split("/")
            pytest.fail(
                f"timed out after {PIPELINE_DEADLINE_S} s waiting for {waiting} to finish; phases seen: "
                f"{seen}\n{describe_failure(cluster, namespace, resource + '.capstan.dev', name)}"
            )
        time.sleep(2)
    return finished, seen


def chat_from_a_pod(cluster, namespace: str, url: str, model: str, message: str) -> dict:
    """What hack/demo.sh does: hack/chat.py in a pod, where the Service name resolves."""
    script = (REPO / "hack" / "chat.py").read_text()
    pod = ["chat-client", "-n", namespace, "--image=capstan/trainer:0.1.0", "--restart=Never"]
    command = ["python", "-c", script, url, model, message]
    cluster.kubectl("run", *pod, *RESTRICTED_RUN, "--command", "--", *command)
    phase = cluster.wait_for(
        "the chat client pod to finish",
        lambda: (
            cluster.pod_phase("chat-client", namespace) in ("Succeeded", "Failed")
            and cluster.pod_phase("chat-client", namespace)
        ),
        timeout=120,
    )
    logs = cluster.kubectl("logs", "chat-client", "-n", namespace, check=False)
    assert phase == "Succeeded", f"the chat client failed:\n{logs.stdout}{logs.stderr}"
    return json.loads(logs.stdout.strip().splitlines()[-1])


# Above pytest's 600 s default: the pipeline's own deadline plus install, chat and teardown.
@pytest.mark.timeout(900)
def test_pipeline_yaml_goes_from_raw_text_to_a_model_that_answers(
    cluster, namespace, operator, prometheus_url
):
    cluster.kubectl("apply", "-n", namespace, "-f", str(PIPELINE))
    finished, seen = watch_pipeline(cluster, namespace)

    for resource, name, _, names in CHAIN:
        key = f"{resource}/{name}"
        assert all(finished.index(d) < finished.index(key) for d in names), (key, finished)
        # Applied all at once, each dependent was seen waiting for what it names.
        assert not names or "Waiting" in seen[key], (key, seen)

    dataset = status_of(cluster, "datasets.capstan.dev", "demo-stories", namespace)
    assert dataset["tokens"] > 10_000 and dataset["manifestUri"].endswith("manifest.json")
    # The conversations were tokenized with the pretraining tokenizer, byte for byte.
    chat = status_of(cluster, "datasets.capstan.dev", "demo-conversations", namespace)
    tokenizers = [
        read_s3(d["manifestUri"].replace("manifest.json", "tokenizer.json")) for d in (dataset, chat)
    ]
    assert tokenizers[0] == tokenizers[1]
    for name in ("demo-base", "demo-assistant"):
        run = status_of(cluster, "trainingruns.capstan.dev", name, namespace)
        assert run["step"] == run["totalSteps"] == run["lastCheckpoint"]["step"], run
    assert 0 < status_of(cluster, "trainingruns.capstan.dev", "demo-assistant", namespace)["lossTokens"]

    # The held-out questions: the tuned model answers most of them, the base model few.
    base = status_of(cluster, "evaluations.capstan.dev", "demo-base", namespace)
    tuned = status_of(cluster, "evaluations.capstan.dev", "demo-assistant", namespace)
    assert base["metrics"]["task.heldout.accuracy"] < 0.2, base["metrics"]
    assert tuned["metrics"]["task.heldout.accuracy"] >= 0.8, tuned["metrics"]
    assert tuned["passed"] is True and all(g["passed"] for g in tuned["gates"]), tuned["gates"]
    assert any(k.startswith("bias.") for k in tuned["metrics"]), tuned["metrics"]
    card = read_s3(tuned["modelCardUri"]).decode()
    assert card.startswith("---") and "# Model card: demo-assistant" in card

    deployment = status_of(cluster, "deployments.capstan.dev", "demo-chat", namespace)
    assert deployment["readyReplicas"] == 1 and deployment["revision"] == 1
    assert deployment["url"] == f"http://demo-chat.{namespace}.svc.cluster.local:8000/v1"
    spec = yaml.safe_load_all(PIPELINE.read_text())
    model_name = next(d for d in spec if d["kind"] == "Deployment")["spec"]["model"]["name"]
    question = json.loads(HELD_OUT.read_text().splitlines()[0])
    reply = chat_from_a_pod(
        cluster, namespace, deployment["url"], model_name, question["messages"][-1]["content"]
    )
    assert reply["model"] == model_name
    assert re.search(question["answer"], reply["answer"]), (question, reply)

    # The chart's dashboard shows the run: every panel has data over the pipeline's time, as
    # Grafana would draw it (a subquery over the last 30 min; the trainer pods are gone by now).
    # MFU is absent on CPU by design.
    cluster.wait_for(
        "a scrape of the serving pod after the chat",
        lambda: client.instant(prometheus_url, f'vllm:request_success_total{{namespace="{namespace}"}}'),
        timeout=30,
    )
    # The Training row is checked by tests/integration/test_prometheus.py on a 300-step run: a
    # short CPU run can end between two scrapes of the trainer pod.
    for row in ("Operator", "Serving"):
        for title, expr in panel_queries(row):
            # A subquery's steps are aligned to 10 s: the newest may precede the chat's scrape.
            cluster.wait_for(
                f"dashboard panel {title!r} to have data after the pipeline: {expr}",
                lambda e=expr: client.instant(prometheus_url, f"max_over_time(({e})[30m:10s])"),
                timeout=60,
            )
