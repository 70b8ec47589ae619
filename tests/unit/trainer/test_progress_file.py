"""progress.json as the trainer writes it is what the operator's model reads back."""

from __future__ import annotations

import json

import pytest

from capstan_api import files
from capstan_trainer.train.metrics import Progress


def test_progress_round_trips_and_a_misspelt_field_is_refused(tmp_path):
    p = Progress(f"file://{tmp_path}", total_steps=10, world=2)
    p.update(
        force=True, phase="Running", step=3, tokens_seen=96, last_checkpoint={"uri": "file:///c", "step": 2}
    )
    doc = json.loads((tmp_path / files.PROGRESS_FILE).read_text())
    assert (doc["step"], doc["tokensSeen"], doc["lastCheckpoint"], doc["worldSize"]) == (
        3,
        96,
        {"uri": "file:///c", "step": 2},
        2,
    )
    assert files.TrainingProgress.model_validate(doc).phase == "Running"
    with pytest.raises(TypeError, match="tokens_sen"):
        p.update(tokens_sen=1)


def test_a_run_is_finished_for_the_launcher_only_under_the_spec_that_finished_it(tmp_path, monkeypatch):
    from capstan_trainer.train.launch import finished_run

    root = f"file://{tmp_path}/ckpt"
    spec = f"""\
apiVersion: capstan.dev/v1alpha1
kind: TrainingRun
metadata: {{name: r}}
spec:
  datasets: [{{uri: "file://{tmp_path}/data"}}]
  optimizer: {{totalSteps: 10, warmupSteps: 2}}
  checkpoint: {{uri: "{root}"}}
"""
    (tmp_path / "run.yaml").write_text(spec)
    args = ["--standalone", "-m", "capstan_trainer.train", "-f", str(tmp_path / "run.yaml")]
    monkeypatch.setenv(files.SPEC_HASH_ENV, "aaaa")
    assert finished_run(args) is None, "nothing written yet"
    Progress(root, total_steps=10, world=1).update(force=True, phase="Succeeded", step=10)
    # A late pod of the gang that finished (same spec) does not start torchrun ...
    assert finished_run(args) == "the run already succeeded at step 10"
    # ... a gang made from an edited spec (e.g. another early-stopping rule) does.
    monkeypatch.setenv(files.SPEC_HASH_ENV, "bbbb")
    assert finished_run(args) is None
