"""Checkpoint folders: commit markers, keep-last, resolving roots, single-process load_model."""

from __future__ import annotations

import pytest
import torch

from capstan_trainer import checkpoint, storage
from capstan_trainer.model import Transformer, preset


def model(seed: int) -> Transformer:
    m = Transformer(preset("test", vocab_size=128))
    m.init_weights(seed=seed)
    return m


def save(ck: checkpoint.Checkpointer, step: int, m: Transformer) -> None:
    ck.save(
        step,
        {"model": m.state_dict(), "loader": {"sequences_consumed": step}},
        {"model": m.cfg.to_dict()},
        b"{}",
    )
    ck.wait()


@pytest.mark.parametrize("where", ["s3", "file"])
def test_commit_keep_last_and_half_written(where, s3_bucket, tmp_path):
    root = f"{s3_bucket}/ck" if where == "s3" else f"file://{tmp_path}/ck"
    ck = checkpoint.Checkpointer(root, keep_last=2, rank=0)
    for step in (10, 20, 30):
        save(ck, step, model(step))
    assert [(s.step, s.committed) for s in checkpoint.list_steps(root)] == [(20, True), (30, True)]
    assert ck.timings[-1]["totalSeconds"] >= ck.timings[-1]["blockingSeconds"]
    # Half-written step 40: data written, the marker never was.
    ck.save(40, {"model": model(40).state_dict()}, {"model": {}}, None)
    ck._pending[1].result()
    ck._pending = None
    assert checkpoint.latest_committed(root).step == 30
    loaded, meta = checkpoint.load_model(root)
    assert meta["step"] == 30 and meta["uri"].endswith("step-00000030")
    assert torch.equal(loaded.layers[0].mlp.up_proj.weight, model(30).layers[0].mlp.up_proj.weight)
    assert loaded.lm_head.weight is loaded.embed_tokens.weight
    with pytest.raises(FileNotFoundError, match="not committed"):
        checkpoint.resolve(checkpoint.step_uri(root, 40))
    assert ck.remove_uncommitted() == [40]
    assert [s.step for s in checkpoint.list_steps(root)] == [20, 30]


def test_load_model_from_step_folder_and_dtype(tmp_path):
    root = f"file://{tmp_path}"
    save(checkpoint.Checkpointer(root, keep_last=3, rank=0), 5, model(1))
    m, meta = checkpoint.load_model(checkpoint.step_uri(root, 5), dtype=torch.bfloat16)
    assert meta["step"] == 5 and m.embed_tokens.weight.dtype == torch.bfloat16 and not m.training
    assert storage.exists(storage.join(meta["uri"], "tokenizer.json"))


def test_empty_root_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no committed checkpoint"):
        checkpoint.load_model(f"file://{tmp_path}/none")


def test_export_of_a_missing_checkpoint_exits_3_naming_the_flag(tmp_path, capsys):
    from capstan_api import exitcodes
    from capstan_trainer import export

    code = export.main(["--checkpoint", f"file://{tmp_path}/none", "--out", str(tmp_path / "hf")])
    assert code == exitcodes.INVALID_CONFIG
    err = capsys.readouterr().err
    assert err.startswith("--checkpoint:") and "no committed checkpoint" in err


def test_saving_a_step_again_drops_its_export_of_the_old_weights(tmp_path):
    root = f"file://{tmp_path}/ck"
    ck = checkpoint.Checkpointer(root, keep_last=3, rank=0)
    save(ck, 10, model(1))
    hf = tmp_path / "ck" / "step-00000010" / "hf"
    hf.mkdir()
    (hf / "model.safetensors").write_bytes(b"old")
    (hf / "EXPORTED").write_text("{}")
    save(ck, 10, model(2))  # the same step written again (a run continued from another's)
    assert not hf.exists()
    assert checkpoint.latest_committed(root).step == 10
