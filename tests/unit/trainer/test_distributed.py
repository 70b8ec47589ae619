"""Two-process torchrun (gloo, FSDP2) on the `test` preset with data and checkpoints on S3 (SeaweedFS):
crash recovery, exact resume, resharding to another world size, half-written checkpoints, and
the Hugging Face export."""

from __future__ import annotations

import json
import uuid

import boto3
import pytest
import torch

from capstan_trainer import checkpoint, storage, synthetic
from tests.unit.trainer.helpers import run_resource, torchrun, write_resource


@pytest.fixture(scope="module")
def bucket(s3_server) -> str:
    name = f"tr-{uuid.uuid4().hex[:10]}"
    boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint,
        region_name=s3_server.region,
        aws_access_key_id=s3_server.access_key,
        aws_secret_access_key=s3_server.secret_key,
    ).create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture(scope="module")
def data(bucket) -> str:
    uri = f"{bucket}/data/tiny"
    synthetic.write_dataset(
        uri, vocab_size=256, train_tokens=60_000, validation_tokens=4_000, shard_tokens=16_384
    )
    return uri


@pytest.fixture(scope="module")
def baseline(bucket, data, tmp_path_factory):
    """The uninterrupted 2-process run: 40 steps, a checkpoint every 10, eval every 20."""
    path = write_resource(
        tmp_path_factory.mktemp("a") / "run.yaml",
        run_resource(data, f"{bucket}/runs/a", eval={"intervalSteps": 20, "batches": 2}),
    )
    result = torchrun(path, nproc=2)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def test_uninterrupted_run_trains_checkpoints_and_reports(baseline, bucket):
    losses = baseline.losses()
    assert sorted(losses) == list(range(1, 41))
    assert losses[40] < losses[1] - 0.5, f"loss did not fall: {losses[1]} -> {losses[40]}"
    assert [e["step"] for e in baseline.events("committed")] == [10, 20, 30, 40]
    assert [e["step"] for e in baseline.events("eval")] == [20, 40]
    root = f"{bucket}/runs/a"
    assert [s.step for s in checkpoint.list_steps(root)] == [20, 30, 40], "keepLast 3"
    progress = json.loads(storage.read_bytes(f"{root}/progress.json"))
    assert progress["phase"] == "Succeeded" and progress["step"] == 40 and progress["worldSize"] == 2
    assert progress["lastCheckpoint"] == {"uri": f"{root}/step-00000040", "step": 40}
    assert progress["mfu"] is None and progress["evalLoss"] is not None
    meta = checkpoint.read_meta(f"{root}/step-00000040")
    assert meta["step"] == 40 and meta["model"]["dim"] == 64 and meta["tokenizer"] == "tokenizer.json"
    assert storage.exists(f"{root}/step-00000040/tokenizer.json")


@pytest.fixture(scope="module")
def crashed(bucket, data, tmp_path_factory):
    """The same run with the last worker SIGKILLed after step 25 (resumes from 20) and, in the
    resumed attempt, after step 33 (resumes from 30, a checkpoint the resumed attempt wrote)."""
    path = write_resource(
        tmp_path_factory.mktemp("b") / "run.yaml",
        run_resource(data, f"{bucket}/runs/b", eval={"intervalSteps": 20, "batches": 2}),
    )
    result = torchrun(path, nproc=2, max_restarts=2, env={"CAPSTAN_FAULT_KILL_STEPS": "25,33"}, timeout_s=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def test_sigkill_near_step_25_resumes_with_identical_losses(baseline, crashed):
    starts = crashed.events("start")
    assert [s["step"] for s in starts][:2] == [0, 20], "expected torchrun's restart to resume from step 20"
    assert starts[1]["resumedFrom"].endswith("step-00000020")
    assert crashed.losses() == baseline.losses(), "same world size: losses must match bit for bit"


def test_resume_twice_in_a_row(baseline, crashed):
    starts = crashed.events("start")
    assert [s["step"] for s in starts] == [0, 20, 30]
    assert starts[2]["resumedFrom"].endswith("step-00000030")
    # Steps 31..33 ran twice; the second time must repeat the first exactly.
    step_records = [r for r in crashed.records if r.get("event") == "step"]
    by_step: dict[int, set[float]] = {}
    for r in step_records:
        by_step.setdefault(r["step"], set()).add(r["loss"])
    assert all(len(v) == 1 for v in by_step.values()), "a re-run step produced a different loss"
    assert crashed.losses() == baseline.losses()


def test_resume_on_one_process_skips_half_written_checkpoint(baseline, bucket, data, tmp_path):
    fs, _ = storage.filesystem(bucket)
    src, dst = f"{bucket}/runs/a", f"{bucket}/runs/d"
    fs.copy(f"{src}/step-00000020", f"{dst}/step-00000020", recursive=True)
    # A half-written newer checkpoint: data files but no .metadata and no COMMITTED marker.
    for name in fs.ls(f"{src}/step-00000030", detail=False):
        if name.endswith(".distcp"):
            fs.copy(name, f"{dst}/step-00000030/{name.rsplit('/', 1)[-1]}")
    fs.invalidate_cache()
    assert [(s.step, s.committed) for s in checkpoint.list_steps(dst)] == [(20, True), (30, False)]
    path = write_resource(
        tmp_path / "run.yaml",
        run_resource(data, dst, resources={"nprocPerNode": 1}, checkpoint={"intervalSteps": 50}),
    )
    result = torchrun(path, nproc=1)
    assert result.returncode == 0, result.stderr[-4000:]
    start = result.events("start")[0]
    assert start["step"] == 20 and start["worldSize"] == 1 and start["accumulation"] == 4
    assert "removing half-written checkpoint" in result.stderr
    want, got = baseline.losses(), result.losses()
    assert sorted(got) == list(range(21, 41))
    for step in got:
        rel = abs(got[step] - want[step]) / abs(want[step])
        assert rel < 1e-5, f"step {step}: {got[step]} vs {want[step]} (relative {rel:.2e})"
    assert [s.step for s in checkpoint.list_steps(dst)] == [20, 40]


def test_export_loads_in_transformers_with_matching_logits(baseline, bucket, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from capstan_trainer.export import export

    root = f"{bucket}/runs/a"
    export(root, str(tmp_path / "hf"))
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["model_type"] == "llama"
    assert config["tie_word_embeddings"] is True and config["rope_theta"] == 10000.0
    for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (tmp_path / "hf" / name).exists(), name
    ours, _ = checkpoint.load_model(root)
    hf = AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"), dtype=torch.float32).eval()
    tokens = torch.randint(0, 256, (2, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (hf(tokens).logits - ours(tokens)).abs().max().item()
    assert diff < 1e-4, f"max abs logit difference {diff}"
    assert AutoTokenizer.from_pretrained(str(tmp_path / "hf"))("t3 t4").input_ids == [3, 4]
