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
