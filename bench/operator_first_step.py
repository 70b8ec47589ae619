"""Apply-to-first-training-step latency of one TrainingRun on the local control plane, with the
real operator process (`python -m capstan_operator`) and real trainer processes run by the node
agent (CPU, gloo, the `test` preset).

Operator path: from `kubectl apply` of the TrainingRun to the trainer's first `step` record (its
time as the node agent stamped the log line), and to the status first showing step >= 1.
Baseline in the same run: the very `-f` file the operator resolved (read from its ConfigMap, only
the checkpoint URI moved so nothing is resumed) run directly with
`python -m torch.distributed.run --standalone --nproc-per-node 1 -m capstan_trainer.train -f FILE`
on this machine, timed to its first `step` record. Prints both, per repeat and as medians, and
the ratio operator / direct.

    .venv/bin/python -m bench.operator_first_step --repeats 3     (from the repository root)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

from bench.operator_cluster import NS, operator_on_cluster, wait
from tests.support.cluster import ClusterHandle

STEP_RECORD = '{"event": "step"'
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1"]


def run_yaml(name: str, bucket: str) -> str:
    spec = {
        "datasets": [{"uri": f"{bucket}/data/tiny"}],
        "model": {"preset": "test"},
        "optimizer": {
            "globalBatchTokens": 128,
            "microBatch": 2,
            "seqLen": 32,
            "warmupSteps": 1,
            "totalSteps": 2,
        },
        "resources": {"minNodes": 1, "maxNodes": 1, "nprocPerNode": 1},
        "checkpoint": {"uri": f"{bucket}/ckpt/{name}", "intervalSteps": 1},
        "metrics": {"intervalSteps": 1},
    }
    body = {
        "apiVersion": "capstan.dev/v1alpha1",
        "kind": "TrainingRun",
        "metadata": {"name": name},
        "spec": spec,
    }
    return yaml.safe_dump(body)


def first_step_logged(h: ClusterHandle, name: str) -> float | None:
    """Wall-clock time (epoch s) the node agent logged the trainer's first step record, if yet."""
    pods = h.list("pods", NS, f"capstan.dev/owner={name}")
    if not pods:
        return None
    r = h.kubectl("logs", pods[0]["metadata"]["name"], "-n", NS, "-c", "trainer", "--timestamps", check=False)
    for line in r.stdout.splitlines():
        stamp, _, text = line.partition(" ")
        if text.startswith(STEP_RECORD):
            return dt.datetime.fromisoformat(stamp).timestamp()
    return None


def status_step(h: ClusterHandle, name: str) -> int:
    return ((h.get("trainingrun", name, NS) or {}).get("status") or {}).get("step") or 0


def milestones(h: ClusterHandle, name: str, t0: float) -> dict[str, float]:
    """Seconds from apply to each step on the way (the API's timestamps have 1 s resolution)."""
    job = h.get("job", f"{name}-train", NS)
    pod = h.list("pods", NS, f"capstan.dev/owner={name}")[0]
    st = pod["status"]
    init = st["initContainerStatuses"][0]["state"].get("terminated") or {}
    trainer = st["containerStatuses"][0]["state"]
    stamps = {
        "jobCreated": job["metadata"]["creationTimestamp"],
        "podCreated": pod["metadata"]["creationTimestamp"],
        "podStarted": st.get("startTime"),
        "validateDone": init.get("finishedAt"),
        "trainerStarted": (trainer.get("running") or trainer.get("terminated") or {}).get("startedAt"),
    }
    return {k: round(dt.datetime.fromisoformat(v).timestamp() - t0, 1) for k, v in stamps.items() if v}


def operator_path(h: ClusterHandle, name: str, bucket: str, timeout: float) -> tuple[float, float, str, dict]:
    """(seconds to the first step record, seconds to status step >= 1, the resolved -f file,
    the milestones on the way)."""
    t0 = time.time()
    h.apply(run_yaml(name, bucket), NS)
    logged = wait(f"the first step record of TrainingRun {name}", lambda: first_step_logged(h, name), timeout)
    marks = milestones(h, name, t0)
    wait(f"TrainingRun {name} status step >= 1", lambda: status_step(h, name) >= 1, timeout)
    seen = time.time()
    resolved = h.get("configmap", f"{name}-train", NS)["data"]["resource.yaml"]
    h.kubectl("delete", "trainingrun", name, "-n", NS, "--wait=false")
    return logged - t0, seen - t0, resolved, marks


def direct_path(resolved: str, bucket: str, name: str, workdir: Path, timeout: float) -> float:
    """Seconds from starting torchrun on the resolved file to its first step record."""
    doc = yaml.safe_load(resolved)
    doc["spec"]["checkpoint"]["uri"] = f"{bucket}/direct/{name}"
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    cmd = [*TORCHRUN, "-m", "capstan_trainer.train", "-f", str(path)]
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        for line in proc.stdout:
            if line.startswith(STEP_RECORD):
                return time.time() - t0
            if time.time() - t0 > timeout:
                break
        raise TimeoutError(f"torchrun on {path} printed no step record within {timeout:.0f} s")
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--timeout", type=float, default=300, help="seconds each wait may take")
    a = p.parse_args()
    rows = []
    with operator_on_cluster("capstan-first-step-", 1, "bench") as (h, root):
        for i in range(a.repeats):
            name = f"first-{i}"
            logged, seen, resolved, marks = operator_path(h, name, "s3://bench", a.timeout)
            wait(
                f"TrainingRun {name}'s pods to be gone",
                lambda n=name: not h.list("pods", NS, f"capstan.dev/owner={n}"),
                a.timeout,
            )
            direct = direct_path(resolved, "s3://bench", name, root, a.timeout)
            rows.append((logged, seen, direct))
            row = {
                "repeat": i,
                "operatorFirstStep": round(logged, 2),
                "operatorStatusStep": round(seen, 2),
                "directFirstStep": round(direct, 2),
                "operatorMilestones": marks,
            }
            print(json.dumps(row), flush=True)
    logged, seen, direct = (statistics.median(col) for col in zip(*rows, strict=True))
    print(f"apply -> first training step, one TrainingRun (1 pod x 1 process, CPU), median of {len(rows)}:")
    print(f"  operator: first step record after         {logged:6.1f} s")
    print(f"  operator: status shows step >= 1 after    {seen:6.1f} s")
    print(f"baseline: torchrun on the same resolved -f file, first step record after {direct:.1f} s")
    print(f"ratio operator / direct: first step {logged / direct:.2f}, status {seen / direct:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
