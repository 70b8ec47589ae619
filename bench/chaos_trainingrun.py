"""Chaos on the core loop: N trials, each killing a random trainer pod of a TrainingRun at a random
step, then comparing the final loss and the final checkpoint's weights with an uninterrupted run.

On the local control plane with the real operator process (`python -m capstan_operator`), trainer
pods from the image run by the node agent (CPU, gloo, the `test` preset). A kill is a pod delete
(SIGTERM: the trainers checkpoint the step they reached) or a force delete with no grace period
(the process is killed, training resumes from the newest committed checkpoint). Baseline in the
same run: the same TrainingRun uninterrupted. Prints, per trial and in sum: exact or not (final
loss relative difference < 1e-5 and weights' largest difference < 1e-5), time from the kill to the
first training step of the resumed gang, restarts spent.

    .venv/bin/python -m bench.chaos_trainingrun [--trials 10] [--nodes 2] [--steps 400]

The kill waits for progress.json's step, not status: the operator reads it every 10 s, and a
120-step run had finished before status showed the kill's step (the first runs timed out waiting
for a resume that had nothing to resume).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml

from bench.operator_cluster import NS, operator_on_cluster, wait
from bench.operator_first_step import STEP_RECORD
from capstan_trainer import checkpoint, storage
from tests.support.cluster import ClusterHandle
from tests.support.trainingruns import run_yaml

REPO = Path(__file__).resolve().parents[1]
BUCKET = "s3://chaos"


def status(h: ClusterHandle, name: str) -> dict:
    return (h.get("trainingrun", name, NS) or {}).get("status") or {}


def finished(h: ClusterHandle, name: str) -> dict | None:
    st = status(h, name)
    return st if st.get("phase") in ("Succeeded", "Failed") else None


def first_step_after(h: ClusterHandle, name: str, t: float) -> float | None:
    """Epoch time of the first step record logged by a pod created after `t` (the recreated gang:
    a survivor of the old one may log a step or two before it notices its peer is gone)."""
    times = []
    for pod in h.list("pods", NS, f"capstan.dev/owner={name}"):
        created = dt.datetime.fromisoformat(pod["metadata"]["creationTimestamp"]).timestamp()
        if created < int(t):  # the API's timestamps have 1 s resolution
            continue
        r = h.kubectl("logs", pod["metadata"]["name"], "-n", NS, "-c", "trainer", "--timestamps", check=False)
        for line in r.stdout.splitlines():
            stamp, _, text = line.partition(" ")
            if text.startswith(STEP_RECORD):
                at = dt.datetime.fromisoformat(stamp).timestamp()
                if at > t:
                    times.append(at)
                    break
    return min(times) if times else None


def run(h: ClusterHandle, name: str, args, timeout: float) -> None:
    body = yaml.safe_load(
        run_yaml(
            name,
            f"{BUCKET}/ckpt/{name}",
            {"uri": f"{BUCKET}/data/tiny"},
            nodes=args.nodes,
            steps=args.steps,
            every=10,
        )
    )
    body["spec"]["failurePolicy"] = {"maxRestarts": 3}
    h.apply(yaml.safe_dump(body), NS)


def weights(name: str) -> dict[str, torch.Tensor]:
    model, _ = checkpoint.load_model(f"{BUCKET}/ckpt/{name}")
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def progress_step(name: str) -> int:
    try:
        return json.loads(storage.read_bytes(f"{BUCKET}/ckpt/{name}/progress.json")).get("step", 0)
    except FileNotFoundError:
        return 0


def final_loss(name: str) -> float:
    return json.loads(storage.read_bytes(f"{BUCKET}/ckpt/{name}/progress.json"))["loss"]


def trial(h: ClusterHandle, i: int, args, rng: random.Random, base_loss: float, base_w: dict) -> dict:
    name = f"chaos-{i}"
    at_step = rng.randint(10, args.steps // 2)
    index = rng.randrange(args.nodes)
    mode = rng.choice(["delete", "kill"])
    run(h, name, args, args.timeout)
    # progress.json itself, not status: the operator reads it every 10 s, and a tiny run moves fast
    wait(f"{name} at step {at_step}", lambda: progress_step(name) >= at_step, args.timeout)
    [pod] = h.list("pods", NS, f"capstan.dev/owner={name},batch.kubernetes.io/job-completion-index={index}")
    killed_at = time.time()
    extra = ["--grace-period=0", "--force"] if mode == "kill" else []
    h.kubectl("delete", "pod", pod["metadata"]["name"], "-n", NS, "--wait=false", *extra, check=False)
    step_at_kill = progress_step(name)
    try:
        resumed = wait(
            f"{name} to train again after the kill",
            lambda: first_step_after(h, name, killed_at),
            args.timeout,
        )
    except TimeoutError as exc:  # say where the run is, not only that it did not resume
        pods = [
            (p["metadata"]["name"], p["status"].get("phase"))
            for p in h.list("pods", NS, f"capstan.dev/owner={name}")
        ]
        raise TimeoutError(f"{exc}; status {status(h, name)}; pods {pods}") from exc
    st = wait(f"{name} to finish", lambda: finished(h, name), args.timeout)
    loss = final_loss(name)
    w = weights(name)
    diff = max(float((w[k] - base_w[k]).abs().max()) for k in base_w)
    rel = abs(loss - base_loss) / abs(base_loss)
    h.kubectl("delete", "trainingrun", name, "-n", NS, "--wait=false")
    return {
        "trial": i,
        "mode": mode,
        "pod": index,
        "killedAtStep": step_at_kill,
        "phase": st["phase"],
        "restarts": st.get("restarts", 0),
        "resumeSeconds": round(resumed - killed_at, 1),
        "lossRelativeDiff": rel,
        "weightsMaxAbsDiff": diff,
        "exact": st["phase"] == "Succeeded" and rel < 1e-5 and diff < 1e-5,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--nodes", type=int, default=2, help="pods of the gang (minNodes = maxNodes)")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=600, help="seconds each wait may take")
    args = p.parse_args()
    rng = random.Random(args.seed)
    rows = []
    with operator_on_cluster("capstan-chaos-", args.nodes, "chaos") as (h, _):
        run(h, "baseline", args, args.timeout)
        st = wait("the uninterrupted baseline to finish", lambda: finished(h, "baseline"), args.timeout)
        if st["phase"] != "Succeeded":
            raise SystemExit(f"baseline run {st['phase']}: {st.get('message')}")
        base_loss, base_w = final_loss("baseline"), weights("baseline")
        for i in range(args.trials):
            row = trial(h, i, args, rng, base_loss, base_w)
            rows.append(row)
            print(json.dumps(row), flush=True)
    exact = sum(r["exact"] for r in rows)
    resume = [r["resumeSeconds"] for r in rows]
    print(f"trials passed (exact final loss and weights): {exact}/{len(rows)}")
    print(
        f"time from kill to resumed training: mean {statistics.mean(resume):.1f} s, max {max(resume):.1f} s"
    )
    for r in rows:
        if not r["exact"]:
            print(f"mismatch: {json.dumps(r)}")
    return 0 if exact == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
