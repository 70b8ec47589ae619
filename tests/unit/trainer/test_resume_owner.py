"""Where a run resumes: a committed but unreadable newest checkpoint falls back to the one before,
and a checkpoint root holding another run's checkpoints is refused (exit 3, naming them) unless
init.checkpointUri continues from one of them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from capstan_api import exitcodes
from capstan_trainer.train import train
from tests.unit.trainer.helpers import run_resource, single_process, write_resource

STEPS = {"warmupSteps": 1, "totalSteps": 6}


def resource(data: str, root: Path, uid: str = "uid-1", **overrides) -> dict:
    res = run_resource(
        data,
        f"file://{root}",
        resources={"nprocPerNode": 1},
        checkpoint={"intervalSteps": 2},
        **{"optimizer": STEPS, **overrides},
    )
    res["metadata"]["uid"] = uid
    return res


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> Path:
    """A finished 6-step run of uid-1 with checkpoints at steps 2, 4 and 6."""
    tmp = tmp_path_factory.mktemp("trained")
    result = single_process(write_resource(tmp / "run.yaml", resource(data, tmp / "ck")))
    assert result.returncode == exitcodes.OK, result.stderr[-4000:]
    assert sorted(p.name for p in (tmp / "ck").glob("step-*")) == [f"step-0000000{s}" for s in (2, 4, 6)]
    return tmp / "ck"


def copy(trained: Path, tmp_path: Path) -> Path:
    root = tmp_path / "ck"
    shutil.copytree(trained, root)
    return root


def test_unreadable_newest_checkpoint_falls_back_to_the_one_before(trained, data, tmp_path):
    root = copy(trained, tmp_path)
    for shard in (root / "step-00000006").glob("*.distcp"):
        shard.write_bytes(b"torn")  # committed, but its tensors are gone
    result = single_process(write_resource(tmp_path / "run.yaml", resource(data, root)))
    assert result.returncode == exitcodes.OK, result.stderr[-4000:]
    start = result.events("start")[0]
    newest = f"file://{root}/step-00000006"
    assert start["step"] == 4 and start["skippedUnreadable"] == [newest]
    assert "committed but unreadable" in result.stderr
    progress = json.loads((root / "progress.json").read_text())
    assert [c["uri"] for c in progress["unreadableCheckpoints"]] == [newest]
    # Steps 5 and 6 were trained again, and step 6 is a loadable checkpoint once more.
    assert sorted(result.losses()) == [5, 6] and (root / "step-00000006" / "COMMITTED").exists()


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"uid": "uid-2"}, "written by another TrainingRun 'tiny' (uid uid-1)"),
        ({"optimizer": {**STEPS, "seed": 8}}, "written with other training settings"),
    ],
    ids=["recreated-run", "other-seed"],
)
def test_another_runs_checkpoints_are_refused_naming_them(trained, data, tmp_path, capsys, change, why):
    root = copy(trained, tmp_path)
    path = write_resource(tmp_path / "run.yaml", resource(data, root, **change))
    assert train.main(["--validate-only", "-f", str(path)]) == exitcodes.INVALID_CONFIG
    err = capsys.readouterr().err
    assert "spec.checkpoint.uri:" in err and "holds checkpoints of another run" in err
    assert f"file://{root}/step-00000006: {why}" in err
    assert "init.checkpointUri" in err
    # The real run refuses too, before training a step or touching the checkpoints.
    result = single_process(path)
    assert result.returncode == exitcodes.INVALID_CONFIG and result.events("step") == []
    assert sorted(p.name for p in root.glob("step-*")) == [f"step-0000000{s}" for s in (2, 4, 6)]


def test_init_checkpoint_uri_continues_from_another_runs_checkpoint(trained, data, tmp_path):
    root = copy(trained, tmp_path)
    init = {"checkpointUri": f"file://{root}/step-00000006"}
    res = resource(data, root, uid="uid-2", init=init, optimizer={**STEPS, "totalSteps": 2})
    result = single_process(write_resource(tmp_path / "run.yaml", res))
    assert result.returncode == exitcodes.OK, result.stderr[-4000:]
    start = result.events("start")[0]
    assert start["step"] == 0 and start["resumedFrom"] is None and start["init"] == init["checkpointUri"]
    meta = json.loads((root / "step-00000002" / "capstan.json").read_text())
    assert meta["owner"]["uid"] == "uid-2" and meta["init"] == init["checkpointUri"]
