"""Shared pieces of the trainer tests: resource files, torchrun runs, metrics parsing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml


def run_resource(data_uri: str, ckpt_uri: str, **overrides) -> dict:
    """A tiny TrainingRun: `test` preset, 32-token sequences, 256-token global batch, 40 steps."""
    spec = {
        "datasets": [{"uri": data_uri}],
        "model": {"preset": "test"},
        "optimizer": {
            "globalBatchTokens": 256,
            "microBatch": 2,
            "seqLen": 32,
            "lr": 3e-3,
            "minLr": 3e-4,
            "warmupSteps": 5,
            "totalSteps": 40,
            "seed": 7,
        },
        "resources": {"nprocPerNode": 2},
        "checkpoint": {"uri": ckpt_uri, "intervalSteps": 10, "keepLast": 3},
        "metrics": {"intervalSteps": 1},
    }
    for key, value in overrides.items():
        if isinstance(value, dict):
            spec.setdefault(key, {}).update(value)
        else:
            spec[key] = value
    return {
        "apiVersion": "capstan.dev/v1alpha1",
        "kind": "TrainingRun",
        "metadata": {"name": "tiny"},
        "spec": spec,
    }


def write_resource(path: Path, resource: dict) -> Path:
    path.write_text(yaml.safe_dump(resource))
    return path


@dataclass
class RunResult:
    returncode: int
    records: list[dict]
    stderr: str

    def losses(self) -> dict[int, float]:
        """Step -> loss; after a restart the re-run steps replace the first attempt's."""
        return {r["step"]: r["loss"] for r in self.records if r.get("event") == "step"}

    def events(self, name: str) -> list[dict]:
        return [r for r in self.records if r.get("event") == name]


def torchrun(
    resource: Path, nproc: int, max_restarts: int = 0, env: dict | None = None, timeout_s: float = 300
) -> RunResult:
    """Run the trainer under torchrun (standalone rendezvous, gloo); stdout parsed as JSON lines.

    The deadline only guards against a hang: a loaded shared CI box has needed 150 s for a run
    with two restarts (each restart re-imports torch and re-forms the group), so allow plenty."""
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    launch += [f"--max-restarts={max_restarts}", "--monitor-interval=0.5"]
    return _run([*launch, "-m", "capstan_trainer.train", "-f", str(resource)], env, timeout_s, "torchrun")


def killed_and_resumed(resource: Path, kill_after: int, nproc: int = 2) -> RunResult:
    """A torchrun run whose last worker is SIGKILLed after step `kill_after` and restarted once
    (from the newest checkpoint); the run must then finish."""
    result = torchrun(
        resource, nproc=nproc, max_restarts=1, env={"CAPSTAN_FAULT_KILL_STEPS": str(kill_after)}
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def single_process(resource: Path, timeout_s: float = 300) -> RunResult:
    """`python -m capstan_trainer.train -f FILE` without torchrun (a one-process group)."""
    return _run(
        [sys.executable, "-m", "capstan_trainer.train", "-f", str(resource)], None, timeout_s, "trainer"
    )


def _run(cmd: list[str], env: dict | None, timeout_s: float, what: str) -> RunResult:
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        tail = (exc.stderr or b"")[-4000:]
        tail = tail.decode(errors="replace") if isinstance(tail, bytes) else tail
        raise AssertionError(f"{what} did not finish within {timeout_s} s; stderr tail:\n{tail}") from exc
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return RunResult(proc.returncode, records, proc.stderr)
