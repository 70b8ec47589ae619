"""The capacity plan's numbers for a known preset, worked out by hand, and the refusal message."""

from __future__ import annotations

import pytest

from capstan_api import capacity
from capstan_api.trainingrun import TrainingRunSpec


def spec(**sections) -> TrainingRunSpec:
    body = {
        "datasets": [{"uri": "s3://bucket/data"}],
        "model": {"preset": "125m"},
        "optimizer": {"microBatch": 8, "seqLen": 2048, "globalBatchTokens": 2048 * 64, "totalSteps": 1000},
        "resources": {"maxNodes": 1, "nprocPerNode": 8, "gpusPerNode": 8},
    }
    return TrainingRunSpec.model_validate(body | sections)


def test_125m_on_8_h100s_matches_the_hand_computed_plan():
    p = capacity.plan(spec(plan={"gpuProduct": "NVIDIA-H100-80GB-HBM3", "gpuMemoryGiB": 80}))
    # 125m: dim 768, 12 layers, 12 heads of 64, 4 kv heads (kv dim 256), ffn 2048, tied, vocab 32000.
    # Block: 2 x 768^2 + 2 x 768 x 256 + 3 x 768 x 2048 + 2 x 768 = 6,292,992.
    # Non-embedding: 12 x 6,292,992 + 768 = 75,516,672; embedding 32000 x 768 = 24,576,000.
    assert (p.parameters, p.non_embedding_parameters) == (100_092_672, 75_516_672)
    # 6 x (75,516,672 + 24,576,000 for the tied output projection) + 12 x 12 x 12 x 64 x 2048.
    assert p.flops_per_token == 600_556_032 + 226_492_416
    assert (p.world_size, p.gpus, p.precision) == (8, 8, "bf16")
    m = p.memory
    # Weights: 4 N / 8 fp32 shard + bf16 gather of two blocks and the root (N - 12 blocks).
    assert m.parameters_gib == round((4 * 100_092_672 / 8 + 2 * (2 * 6_292_992 + 24_576_768)) / 2**30, 2)
    assert m.gradients_gib == round((4 * 100_092_672 / 8 + 4 * 6_292_992) / 2**30, 2)
    assert m.optimizer_gib == round(8 * 100_092_672 / 8 / 2**30, 2)
    # Per token: block 2 x (5 x 768 + 2 x 256 + 4 x 2048) + 8 x 768 = 31,232 bytes, x 12 layers;
    # final norm 4 x 768 + 2 x 768 and loss 12 x 32000; 8 x 2048 tokens.
    assert m.activations_gib == round(8 * 2048 * (12 * 31_232 + 4608 + 384_000) / 2**30, 2) == 11.65
    # Checkpointed: each block's bf16 input (2 x 768) plus one block recomputed.
    assert m.activations_checkpointed_gib == round(8 * 2048 * (12 * 1536 + 31_232 + 388_608) / 2**30, 2)
    assert m.total_gib == 12.93 and p.fits
    # 8 x 989 TFLOP/s x 0.4 / 827,048,448 FLOPs per token; 1000 steps x 131,072 tokens.
    assert p.tokens_per_sec == pytest.approx(8 * 989e12 * 0.4 / 827_048_448, abs=0.1)
    assert p.eta_seconds == pytest.approx(131_072_000 / p.tokens_per_sec, abs=0.1)
    assert p.gpu_hours == round(p.eta_seconds * 8 / 3600, 2)


def test_a_run_that_cannot_fit_is_refused_with_the_numbers_and_the_remedies():
    s = spec(
        model={"preset": "8b"},
        optimizer={"microBatch": 1, "seqLen": 4096, "globalBatchTokens": 4096 * 16},
        resources={"maxNodes": 1, "nprocPerNode": 2, "gpusPerNode": 2},
        plan={"gpuMemoryGiB": 80},
    )
    p = capacity.plan(s)
    assert p.fits is False
    assert capacity.refusal(s, p) == (
        "needs 82.1 GiB per GPU at 2 GPUs (parameters 14.79, gradients 14.3, optimizer 26.98, "
        "activations 25.06); nodes have 80 GiB: use 4 GPUs (maxNodes 2) or activationCheckpointing: full"
    )
    # Activations do not shrink with more GPUs: only checkpointing helps.
    s = spec(
        model={"preset": "8b"},
        optimizer={"microBatch": 2, "seqLen": 8192, "globalBatchTokens": 8192 * 16},
        plan={"gpuMemoryGiB": 80},
    )
    assert capacity.refusal(s, capacity.plan(s)).endswith("nodes have 80 GiB: activationCheckpointing: full")


def test_lora_needs_gradients_and_optimizer_state_only_for_the_adapters():
    """The 8b run refused above fits with LoRA: the frozen weights carry no AdamW moments."""
    lora = {"rank": 16, "targetModules": ["q_proj", "v_proj"]}
    s = spec(
        model={"preset": "8b"},
        optimizer={"microBatch": 1, "seqLen": 4096, "globalBatchTokens": 4096 * 16},
        resources={"maxNodes": 1, "nprocPerNode": 2, "gpusPerNode": 2},
        plan={"gpuMemoryGiB": 80},
        init={"checkpointUri": "s3://bucket/base/step-00000100"},
        lora=lora,
    )
    # 8b: dim 4096, 32 layers, 32 heads of 128, 8 kv heads (1024). q: 16 x (4096 + 4096), v: 16 x (4096 + 1024).
    adapters = 32 * 16 * (8192 + 5120)
    assert adapters == 6_815_744
    p = capacity.plan(s)
    m = p.memory
    assert m.optimizer_gib == round(8 * adapters / 2 / 2**30, 2) == 0.03
    assert m.gradients_gib == round((4 * adapters / 2 + 4 * adapters / 32) / 2**30, 2)
    assert p.fits and capacity.refusal(s, p) is None


def test_a_cpu_run_gets_a_plan_but_no_refusal():
    s = spec(resources={"maxNodes": 1, "nprocPerNode": 2, "gpusPerNode": 0}, plan={"gpuMemoryGiB": 0.001})
    p = capacity.plan(s)
    assert (p.gpus, p.precision, p.memory.overhead_gib) == (0, "fp32", 0)
    assert p.fits is None and p.tokens_per_sec is None and capacity.refusal(s, p) is None
    assert p.memory.total_gib > 0


def test_unknown_gpu_memory_means_no_verdict():
    s = spec()
    p = capacity.plan(s)
    assert p.fits is None and p.gpu_memory_gib is None and capacity.refusal(s, p) is None
    assert p.peak_flops is None and "unknown device" in p.peak_name
