"""objective sft: loss only on the masked (assistant) tokens, packed conversations kept apart in
attention, masked-token counts reported, and exact resume after a crash as for pretraining."""

from __future__ import annotations

import json

import pytest
import torch

from capstan_api.common import parse_spec
from capstan_api.trainingrun import TrainingRunSpec
from capstan_trainer import shards, storage
from capstan_trainer.model import ModelConfig, Transformer
from capstan_trainer.train import loader
from capstan_trainer.train.config import ConfigError, resolve
from tests.unit.trainer.chat_data import prepare_chat
from tests.unit.trainer.helpers import killed_and_resumed, run_resource, torchrun, write_resource


def test_packed_documents_do_not_see_each_other():
    torch.manual_seed(0)
    model = Transformer(
        ModelConfig(vocab_size=64, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64, max_seq_len=64)
    )
    model.init_weights(seed=0)
    a, b = torch.randint(0, 64, (1, 10)), torch.randint(0, 64, (1, 14))
    packed = torch.cat([a, b], 1)
    docs = torch.tensor([[0] * 10 + [1] * 14])
    with torch.no_grad():
        alone, together, unmasked = model(b), model(packed, docs), model(packed)
    # Each conversation scores as if it stood alone (RoPE: only distances matter) ...
    assert torch.allclose(together[:, 10:], alone, atol=1e-5)
    # ... which plain causal attention over the packed row does not give.
    assert not torch.allclose(unmasked[:, 10:], alone, atol=1e-3)


def test_batch_weights_are_the_targets_mask_and_documents_count_from_starts():
    L, S = shards.LOSS, shards.DOC_START
    tokens = torch.arange(8).view(1, 8)
    mask = torch.tensor([[S, 0, L, L, 0, S, 0, L]], dtype=torch.uint8)
    b = loader.Batch.of(tokens, mask)
    assert b.weight.tolist() == [[0, 1, 1, 0, 0, 0, 1]]  # the weight of predicting token t+1
    assert b.docs.tolist() == [[1, 1, 1, 1, 1, 2, 2]]


@pytest.fixture(scope="module")
def chat(tmp_path_factory) -> str:
    return prepare_chat(tmp_path_factory.mktemp("chat"))


def sft_resource(data: str, ckpt: str, **over) -> dict:
    res = run_resource(data, ckpt, optimizer={"totalSteps": 20}, checkpoint={"intervalSteps": 5}, **over)
    res["spec"]["objective"] = "sft"
    return res


def test_sft_needs_a_dataset_with_a_loss_mask(data, tmp_path):
    spec = parse_spec(TrainingRunSpec, sft_resource(data, f"file://{tmp_path}/ck"), "TrainingRun")
    with pytest.raises(ConfigError, match=r"spec.datasets\[0\].uri: objective sft needs a chat Dataset"):
        resolve(spec)


@pytest.fixture(scope="module")
def baseline(chat, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("a")
    res = sft_resource(chat, f"file://{tmp}/ck", eval={"intervalSteps": 10, "batches": 1})
    result = torchrun(write_resource(tmp / "run.yaml", res), nproc=2)
    assert result.returncode == 0, result.stderr[-4000:]
    return result, f"file://{tmp}/ck"


def test_sft_trains_on_the_masked_tokens_and_reports_their_count(baseline, chat):
    result, root = baseline
    assert result.events("start")[0]["objective"] == "sft"
    steps = result.events("step")
    losses = result.losses()
    assert sorted(losses) == list(range(1, 21))
    assert losses[20] < losses[1] - 1.0, f"loss on the answers did not fall: {losses[1]} -> {losses[20]}"
    # 8 windows of 32 targets a step: the loss tokens are some of those 256, never all.
    assert all(0 < s["lossTokens"] < 256 for s in steps)
    progress = json.loads(storage.read_bytes(f"{root}/progress.json"))
    assert progress["lossTokens"] == steps[-1]["lossTokens"]
    assert [e["step"] for e in result.events("eval")] == [10, 20]
    manifest = shards.read_manifest(chat)
    assert manifest.loss_mask == "assistant" and manifest.splits["train"].loss_tokens > 0


def test_sft_resumes_exactly_after_a_crash(baseline, chat, tmp_path):
    """The last worker is SIGKILLed after step 13; torchrun restarts the gang from step 10 and
    the losses (and so the masks the loader reads) repeat bit for bit."""
    res = sft_resource(chat, f"file://{tmp_path}/ck", eval={"intervalSteps": 10, "batches": 1})
    crashed = killed_and_resumed(write_resource(tmp_path / "run.yaml", res), kill_after=13)
    assert [s["step"] for s in crashed.events("start")] == [0, 10]
    assert crashed.losses() == baseline[0].losses()
    assert [s["lossTokens"] for s in crashed.events("step")][-10:] == [
        s["lossTokens"] for s in baseline[0].events("step")
    ][-10:]
