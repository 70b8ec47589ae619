"""Exact removal by replay, in-process on CPU: a run trained on a revision holding a document;
the next revision removes it; `init.replayFrom` restarts from the replayed run's newest
checkpoint before the document's first step and trains on the new revision. The result must be
bit-identical to an independent continuation (the same checkpoint adopted as a run's own and
resumed on the new revision by the ordinary restart path), and the steps it skipped counted."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from capstan_api import exitcodes
from capstan_api.trainingrun import TrainingRunSpec
from capstan_trainer import checkpoint, storage
from capstan_trainer.prepare.prepare import main as prepare
from capstan_trainer.train import loader, replay, resume
from capstan_trainer.train.config import ConfigError, resolve
from tests.unit.prepare import corpus
from tests.unit.trainer.helpers import run_resource, single_process, write_resource

STEPS = 40
OPT = {"globalBatchTokens": 256, "microBatch": 2, "seqLen": 32, "totalSteps": STEPS, "warmupSteps": 4}
CKPT = {"intervalSteps": 2, "keepLast": 100}


def _prepare(tmp: Path, name: str, **overrides) -> str:
    out = tmp / name
    (tmp / f"{name}.yaml").write_text(yaml.safe_dump(corpus.spec(str(tmp / "in"), str(out), **overrides)))
    with contextlib.redirect_stdout(io.StringIO()):
        assert prepare(["-f", str(tmp / f"{name}.yaml")]) == 0
    return f"file://{out}"


def _run(tmp: Path, name: str, data: str, optimizer: dict = OPT, **overrides) -> dict:
    res = run_resource(
        data,
        f"file://{tmp}/{name}",
        optimizer=optimizer,
        checkpoint=CKPT,
        resources={"nprocPerNode": 1},
        **overrides,
    )
    res["metadata"]["name"] = name
    return res


def _weights(root: str) -> dict[str, torch.Tensor]:
    model, _ = checkpoint.load_model(checkpoint.latest_committed(root).uri)
    return model.state_dict()


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("replay")
    corpus.write(corpus.build(), tmp / "in")
    rev1 = _prepare(tmp, "rev1")
    a = _run(tmp, "a", rev1)
    ran = single_process(write_resource(tmp / "a.yaml", a))
    assert ran.returncode == exitcodes.OK, ran.stderr[-3000:]
    # The removed document: the one the run met last (so the replay has most to save).
    cfg_a = resolve(TrainingRunSpec.model_validate(a["spec"]), name="a", check_storage=False)
    src = cfg_a.sources[0]
    order = loader.SequenceOrder([src.train.windows(32)], [1.0], [src.fingerprint], cfg_a.optimizer.seed)
    ranges = replay.train_ranges((tmp / "rev1" / "documents.jsonl").read_text())
    n = src.train.windows(32)
    first = {
        doc: replay.first_exposure(order, [replay.windows_touching([r], 32, n)], cfg_a.batch_seqs, STEPS)
        for doc, r in ranges.items()
    }
    doc, k = max(((d, e) for d, e in first.items() if e is not None), key=lambda x: x[1])
    assert k >= 2, f"every document is met by step {k}: no checkpoint before any exposure"
    # The same tokenizer, so the new revision's tokens mean what the checkpoint learnt.
    rev2 = _prepare(
        tmp, "rev2", exclusions={"documentIds": [doc]}, tokenizer={"uri": f"{rev1}/tokenizer.json"}
    )
    r = _run(tmp, "r", rev2, init={"replayFrom": f"file://{tmp}/a"})
    got = single_process(write_resource(tmp / "r.yaml", r))
    assert got.returncode == exitcodes.OK, got.stderr[-3000:]
    return tmp, doc, k, got


def test_replay_starts_before_the_first_exposure_and_says_what_it_saved(replayed):
    tmp, _, k, got = replayed
    s = k - k % CKPT["intervalSteps"]  # newest checkpoint step <= k
    (event,) = got.events("replay")
    assert event["step"] == s and event["firstExposure"] == k and event["stepsSaved"] == s
    assert event["removedDocuments"] == 1 and event["checkpoint"].endswith(f"step-{s:08d}")
    assert got.events("start")[0]["step"] == s
    assert sorted(got.losses()) == list(range(s + 1, STEPS + 1)), "only the steps after the checkpoint ran"
    progress = json.loads(storage.read_bytes(f"file://{tmp}/r/progress.json"))
    assert progress["replay"]["stepsSaved"] == s and progress["phase"] == "Succeeded"
    print(f"\nreplay: first exposure at step {k}, started from step {s}: {s} of {STEPS} steps saved")


def test_replay_is_bit_identical_to_continuing_that_checkpoint_on_the_new_revision(replayed):
    tmp, _, k, _ = replayed
    s = k - k % CKPT["intervalSteps"]
    # The reference: a run on the new revision that owns a copy of the checkpoint and resumes it
    # through the ordinary restart path (no replay code involved).
    o = _run(tmp, "o", f"file://{tmp}/rev2")
    cfg_o = resolve(TrainingRunSpec.model_validate(o["spec"]), name="o", check_storage=False)
    shutil.copytree(tmp / "a" / f"step-{s:08d}", tmp / "o" / f"step-{s:08d}")
    meta_path = tmp / "o" / f"step-{s:08d}" / checkpoint.META
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "owner": resume.owner(cfg_o)}))
    ran = single_process(write_resource(tmp / "o.yaml", o))
    assert ran.returncode == exitcodes.OK, ran.stderr[-3000:]
    assert ran.events("start")[0]["resumedFrom"].endswith(f"step-{s:08d}")
    mine, ref = _weights(f"file://{tmp}/r"), _weights(f"file://{tmp}/o")
    assert mine.keys() == ref.keys()
    assert all(torch.equal(mine[n], ref[n]) for n in mine), "replay differs from the reference"
    a = _weights(f"file://{tmp}/a")
    assert any(not torch.equal(mine[n], a[n]) for n in mine), "the replay trained on other data than the run"


@pytest.mark.parametrize("weights", [[1.0], [3.0, 1.0]])
def test_first_exposure_matches_a_brute_force_scan(weights):
    """Window w reads tokens [w*L, w*L + L + 1) of the train split (the last one as a target);
    the scan runs several epochs, over one source and over a mixture."""
    seq, batch, steps = 8, 4, 300
    lengths = [5, 13, 1, 30, 7, 9, 21, 2, 40, 11]
    starts = [sum(lengths[:i]) for i in range(len(lengths))]
    n = (sum(lengths) - 1) // seq
    order = loader.SequenceOrder([n] * len(weights), weights, [f"fp{i}" for i in range(len(weights))], 3)
    picks = [order.locate(g) for g in range(steps * batch)]
    for src in range(len(weights)):
        for start, length in zip(starts, lengths, strict=True):
            end = start + length
            brute = next(
                (
                    g // batch
                    for g, (s, w) in enumerate(picks)
                    if s == src and w * seq < end and start < w * seq + seq + 1
                ),
                None,
            )
            touched = [set() for _ in weights]
            touched[src] = replay.windows_touching([(start, end)], seq, n)
            assert replay.first_exposure(order, touched, batch, steps) == brute, (src, start, end)


def test_index_of_inverts_locate():
    order = loader.SequenceOrder([37, 1000], [1.0, 2.0], ["a", "b"], 11)
    for g in range(0, 5000, 7):
        src, window = order.locate(g)
        assert g in {order.index_of(src, window, e) for e in range(100)}, (g, src, window)


def test_a_replay_with_other_training_settings_is_refused(replayed, tmp_path):
    tmp, _, _, _ = replayed
    bad = _run(
        tmp_path,
        "x",
        f"file://{tmp}/rev2",
        init={"replayFrom": f"file://{tmp}/a"},
        optimizer={**OPT, "seed": 99},
    )
    cfg = resolve(TrainingRunSpec.model_validate(bad["spec"]), name="x", check_storage=False)
    with pytest.raises(ConfigError, match="spec.optimizer.seed"):
        replay.plan(cfg)
