"""Model-side pieces of the trainer: activation checkpointing, learning-rate schedule, FLOPs."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from capstan_trainer.model import Transformer, preset
from capstan_trainer.train import metrics, parallel
from capstan_trainer.train.step import lr_at


def test_activation_checkpointing_keeps_gradients_and_names():
    torch.manual_seed(0)
    a = Transformer(preset("test", vocab_size=64))
    a.init_weights(seed=1)
    b = Transformer(preset("test", vocab_size=64))
    b.load_state_dict(a.state_dict())
    parallel.apply_ac(b)
    assert list(a.state_dict()) == list(b.state_dict())
    x = torch.randint(0, 64, (2, 16))
    for m in (a, b):
        F.cross_entropy(m(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten()).backward()
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        torch.testing.assert_close(pa.grad, pb.grad, msg=name)


def test_lr_schedule():
    assert lr_at(0, 1.0, 0.1, 10, 100) == 0.1
    assert lr_at(9, 1.0, 0.1, 10, 100) == 1.0
    assert abs(lr_at(55, 1.0, 0.1, 10, 100) - 0.55) < 1e-9
    assert abs(lr_at(100, 1.0, 0.1, 10, 100) - 0.1) < 1e-12


def test_flops_and_parameter_counts():
    cfg = preset("test", vocab_size=256)
    assert cfg.num_params() == sum(p.numel() for p in Transformer(cfg).parameters())
    big = preset("8b", vocab_size=128256)
    assert 7.9e9 < big.num_params() < 8.1e9
    # 6N dominates; attention adds 12 * L * H * hd * T.
    assert metrics.flops_per_token(big, 8192) > 6 * 7e9
    assert metrics.peak_flops(torch.device("cpu")) == (None, "cpu")


def test_presets_through_1b_and_8b():
    assert 1.2e9 < preset("1b", vocab_size=128256).num_params() < 1.3e9  # Llama 3.2 1B: 1.24B
    assert 0.3e9 < preset("350m", vocab_size=32000).num_params() < 0.4e9
    assert 0.1e9 < preset("125m", vocab_size=32000).num_params() < 0.15e9


def test_compile_option_matches_eager():
    """fsdp.compile compiles each block in place: same names, same loss and gradients. aot_eager
    traces forward and backward as inductor would (a graph break fails), without code generation
    (minutes on a loaded CPU); inductor itself runs in bench/gpu_mfu.sh."""
    torch.manual_seed(0)
    a = Transformer(preset("test", vocab_size=64))
    a.init_weights(seed=1)
    b = Transformer(preset("test", vocab_size=64))
    b.load_state_dict(a.state_dict())
    parallel.apply_compile(b, backend="aot_eager")
    assert list(a.state_dict()) == list(b.state_dict())
    x = torch.randint(0, 64, (2, 17))
    losses = []
    for m in (a, b):
        loss = F.cross_entropy(m(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten())
        loss.backward()
        losses.append(loss.item())
    assert abs(losses[0] - losses[1]) < 1e-5
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-4, atol=1e-6, msg=name)
