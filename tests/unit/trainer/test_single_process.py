"""One process without torchrun, on local files: early stopping end to end, the progress file the
operator reads, the resolved -f form (init.checkpointUri), and the exit-code contract."""

from __future__ import annotations

import json
import os

import pytest

from capstan_api import exitcodes, files
from capstan_trainer import checkpoint, storage
from capstan_trainer.train import train
from tests.unit.trainer.helpers import run_resource, single_process, torchrun, write_resource

PROGRESS_FIELDS = {
    "replay",
    "specHash",
    "phase",
    "step",
    "totalSteps",
    "loss",
    "evalLoss",
    "overfitting",
    "lr",
    "tokensSeen",
    "tokensPerSec",
    "mfu",
    "lossTokens",
    "dpo",
    "lastCheckpoint",
    "unreadableCheckpoints",
    "worldSize",
    "trainableParams",
    "totalParams",
    "restarts",
    "time",
}


@pytest.fixture(scope="module")
def stopped(data, tmp_path_factory):
    """Eval every 2 steps; an improvement must exceed 100 nats, so the second eval (step 4) stops."""
    tmp = tmp_path_factory.mktemp("stop")
    resource = run_resource(
        data,
        f"file://{tmp}/ck",
        resources={"nprocPerNode": 1},
        eval={"intervalSteps": 2, "batches": 1, "earlyStopping": {"patience": 1, "minDelta": 100.0}},
    )
    # What the operator annotates the resource with: the capacity plan's estimate.
    resource["metadata"]["annotations"] = {files.PLANNED_GPU_HOURS_ANNOTATION: "0.5"}
    result = single_process(write_resource(tmp / "run.yaml", resource))
    assert result.returncode == exitcodes.OK, result.stderr[-4000:]
    return result, f"file://{tmp}/ck"


def test_early_stopping_ends_the_run_and_says_so(stopped):
    result, root = stopped
    assert [(e["step"], e["evalsWithoutImprovement"]) for e in result.events("eval")] == [(2, 0), (4, 1)]
    assert sorted(result.losses()) == [1, 2, 3, 4]
    done = result.events("done")[0]
    assert done["phase"] == "EarlyStopped" and done["step"] == 4
    assert [e["step"] for e in result.events("committed")] == [4], "the stopped state is checkpointed"
    assert "FSDP2 not applied" in result.stderr  # one fp32 process trains a plain module


def test_progress_file_holds_what_the_operator_shows(stopped):
    _, root = stopped
    progress = json.loads(storage.read_bytes(f"{root}/progress.json"))
    assert set(progress) == PROGRESS_FIELDS
    assert progress["phase"] == "EarlyStopped" and progress["step"] == 4 and progress["totalSteps"] == 40
    assert progress["lastCheckpoint"] == {"uri": f"{root}/step-00000004", "step": 4}
    assert progress["worldSize"] == 1 and progress["restarts"] == 0 and progress["mfu"] is None
    assert progress["unreadableCheckpoints"] == []
    assert progress["tokensSeen"] == 4 * 256 and progress["tokensPerSec"] > 0
    assert progress["loss"] > 0 and progress["evalLoss"] > 0 and progress["overfitting"] is False
    assert progress["lossTokens"] is None and progress["dpo"] is None  # pretraining: every token counts


def test_checkpoint_records_hyperparameters_compute_and_overfitting(stopped):
    """What the model card reports: the optimizer settings, the precision, the compute measured
    beside the plan's estimate, and the last evaluation's overfitting signal."""
    _, root = stopped
    meta = checkpoint.read_meta(f"{root}/step-00000004")
    o = meta["optimizer"]
    assert (o["totalSteps"], o["seed"], o["precision"], o["lr"]) == (40, 7, "auto", 3e-3)
    assert meta["precision"] == "float32"  # auto on CPU
    c = meta["compute"]
    assert c["processSeconds"] > 0 and c["device"] == "cpu" and c["gpuHours"] == 0.0
    assert c["plannedGpuHours"] == 0.5 and c["worldSize"] == 1 and c["tokensSeen"] == 4 * 256
    assert meta["validation"]["overfitting"] is False and meta["validation"]["evalLoss"] > 0


def test_resolved_form_starts_from_another_runs_checkpoint(stopped, data, tmp_path, capsys):
    """What the operator writes for `init.fromTrainingRun`: `init.checkpointUri`, validated, then run."""
    first, root = stopped
    resource = run_resource(
        data,
        f"file://{tmp_path}/ck",
        resources={"nprocPerNode": 1},
        init={"checkpointUri": root},
        optimizer={"totalSteps": 6, "warmupSteps": 1},
    )
    path = write_resource(tmp_path / "run.yaml", resource)
    assert train.main(["--validate-only", "-f", str(path)]) == exitcodes.OK, capsys.readouterr().err
    result = single_process(path)
    assert result.returncode == exitcodes.OK, result.stderr[-4000:]
    assert result.events("start")[0]["init"] == f"{root}/step-00000004"
    # Its checkpoints record where it started (the export and the model card read it).
    newest = checkpoint.list_steps(f"file://{tmp_path}/ck")[-1]
    assert checkpoint.read_meta(newest.uri)["init"] == f"{root}/step-00000004"
    # Starting from trained weights: the first loss is far below a fresh model's first loss.
    assert result.losses()[1] < first.losses()[1] - 0.3, (result.losses()[1], first.losses()[1])


def test_config_error_in_a_real_run_exits_3(data, tmp_path):
    resource = run_resource(
        data, f"file://{tmp_path}/ck", resources={"nprocPerNode": 1}, model={"preset": "9b"}
    )
    result = single_process(write_resource(tmp_path / "run.yaml", resource))
    assert result.returncode == exitcodes.INVALID_CONFIG
    assert "spec.model.preset" in result.stderr and result.records == []


def test_one_process_checkpoint_resumes_on_two(stopped, data, tmp_path):
    """One fp32 process trains a plain module (no FSDP2); its checkpoint must still reshard onto
    two FSDP2 ranks, and both continuations (the stopped run resumed to its next evaluation,
    which stops it again) must agree."""
    import shutil

    _, root = stopped
    results = {}
    for nproc in (1, 2):
        dst = tmp_path / f"n{nproc}"
        shutil.copytree(root.removeprefix("file://"), dst / "ck")
        resource = run_resource(
            data,
            f"file://{dst}/ck",
            resources={"nprocPerNode": nproc},
            eval={"intervalSteps": 2, "batches": 1, "earlyStopping": {"patience": 1, "minDelta": 100.0}},
        )
        path = write_resource(dst / "run.yaml", resource)
        results[nproc] = single_process(path) if nproc == 1 else torchrun(path, nproc=2)
        assert results[nproc].returncode == exitcodes.OK, results[nproc].stderr[-4000:]
        start = results[nproc].events("start")[0]
        assert start["step"] == 4 and start["worldSize"] == nproc
        assert results[nproc].events("done")[0]["step"] == 6
        # Compute accumulates over the restart: the step-6 checkpoint counts the first attempt's too.
        before = checkpoint.read_meta(f"{root}/step-00000004")["compute"]["processSeconds"]
        after = checkpoint.read_meta(f"file://{dst}/ck/step-00000006")["compute"]["processSeconds"]
        assert after > before
    one, two = results[1].losses(), results[2].losses()
    assert sorted(two) == [5, 6]
    for step in two:
        assert abs(two[step] - one[step]) / one[step] < 1e-5, (step, one[step], two[step])


def test_sigterm_checkpoints_the_step_reached_and_a_restart_resumes_there(data, tmp_path):
    """Suspend or preemption: the pod's launcher passes SIGTERM to torchrun, which forwards it;
    both ranks stop at the same step, save it (not just the last periodic checkpoint), and the
    launcher exits STOPPED (torchrun alone exits 1); a new run starts from that step."""
    import signal
    import subprocess
    import sys
    import threading
    import time

    root = f"file://{tmp_path}/ck"
    resource = run_resource(
        data, root, optimizer={"totalSteps": 2000}, checkpoint={"intervalSteps": 1000, "keepLast": 2}
    )
    path = write_resource(tmp_path / "run.yaml", resource)
    launch = [sys.executable, "-m", "capstan_trainer.train.launch", "--standalone", "--nproc-per-node=2"]
    cmd = [*launch, "--monitor-interval=0.5", "-m", "capstan_trainer.train", "-f", str(path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    errors = (tmp_path / "stderr.txt").open("w")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors, text=True, env=env)
    records: list[dict] = []
    reader = threading.Thread(
        target=lambda: records.extend(json.loads(ln) for ln in proc.stdout if ln.startswith("{")), daemon=True
    )
    reader.start()
    deadline = time.monotonic() + 240
    while not any(r.get("event") == "step" and r["step"] >= 5 for r in records):
        assert proc.poll() is None, (tmp_path / "stderr.txt").read_text()[-4000:]
        assert time.monotonic() < deadline, "timed out waiting for step 5 of the 2-process run"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("the run did not stop within 120 s of SIGTERM") from None
    reader.join(30)  # until the workers, which share the pipe, have exited too
    err = (tmp_path / "stderr.txt").read_text()
    assert proc.returncode == exitcodes.STOPPED, f"exit {proc.returncode}, not STOPPED: {err[-4000:]}"
    [stopped] = [r for r in records if r.get("event") == "stopped"]
    at = stopped["step"]
    assert at >= 5 and [r["step"] for r in records if r.get("event") == "committed"] == [at], err[-4000:]
    progress = json.loads(storage.read_bytes(f"{root}/progress.json"))
    assert progress["phase"] == "Stopped" and progress["lastCheckpoint"]["step"] == at

    again = run_resource(data, root, resources={"nprocPerNode": 1}, optimizer={"totalSteps": at + 2})
    resumed = single_process(write_resource(tmp_path / "again.yaml", again))
    assert resumed.returncode == exitcodes.OK, resumed.stderr[-4000:]
    assert resumed.events("start")[0]["step"] == at and sorted(resumed.losses()) == [at + 1, at + 2]
