"""A baseline (the base model's results.json) puts base and tuned side by side in the model card."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from capstan_trainer.evaluate import evaluate
from capstan_trainer.evaluate.model_card import comparison_rows
from tests.unit.evaluation.test_evaluate import _resource


def test_comparison_rows_are_the_shared_metrics_with_the_change():
    base = {"task.facts.accuracy": 0.25, "perplexity.token_perplexity": 30.0, "task.facts.examples": 4.0}
    tuned = {"perplexity.token_perplexity": 20.0, "task.facts.accuracy": 0.75, "task.new.acc": 1.0}
    assert comparison_rows(base, tuned) == [
        ["perplexity.token_perplexity", 30.0, 20.0, -10.0],
        ["task.facts.accuracy", 0.25, 0.75, 0.5],
    ]


def test_model_card_shows_base_and_tuned(tiny, tmp_path, capsys):
    base = {
        "model": "s3://models/base",
        "metrics": {"task.next.acc": 0.125, "perplexity.token_perplexity": 99.0},
    }
    (tmp_path / "base.json").write_text(json.dumps(base))
    path = _resource(tiny, tmp_path, [])
    res = yaml.safe_load(Path(path).read_text())
    res["spec"]["baselineResultsUri"] = f"file://{tmp_path}/base.json"
    Path(path).write_text(yaml.safe_dump(res))
    assert evaluate.main(["-f", path]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    card = (tmp_path / "out" / "README.md").read_text()
    acc = results["metrics"]["task.next.acc"]
    assert "Base model (s3://models/base) and this model" in card
    assert f"| task.next.acc | 0.1250 | {acc:.4f} | {acc - 0.125:.4f} |" in card
    assert results["baseline"]["metrics"]["perplexity.token_perplexity"] == 99.0


def test_unreadable_baseline_exits_3_naming_the_field(tiny, tmp_path, capsys):
    path = _resource(tiny, tmp_path, [])
    res = yaml.safe_load(Path(path).read_text())
    res["spec"]["baselineResultsUri"] = f"file://{tmp_path}/missing.json"
    Path(path).write_text(yaml.safe_dump(res))
    assert evaluate.main(["-f", path]) == 3
    assert "spec.baselineResultsUri" in capsys.readouterr().err
