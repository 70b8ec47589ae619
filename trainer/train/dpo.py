"""Direct Preference Optimization (Rafailov et al. 2023), TRL's sigmoid loss:
  loss = -log sigmoid(beta * ((log p(chosen) - log ref(chosen)) - (log p(rejected) - log ref(rejected))))
with log-probabilities summed over each answer's tokens (the mask's LOSS bits).

The reference is the init weights, frozen, built and sharded like the policy: a second model
rather than log-probs precomputed in a first pass, because it needs no extra pass, no stored
file to keep consistent with the data order, and works for any number of epochs and for resume
(the reference is rebuilt from the init, never from a checkpoint of the policy). Its cost is one
more forward without backward per step and a second sharded copy of the weights.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.fsdp import FSDPModule

from capstan_trainer.train import pairs, resume
from capstan_trainer.train.config import TrainConfig
from capstan_trainer.train.loader import Batch
from capstan_trainer.train.step import apply_gradients, build_model


def reference_model(cfg: TrainConfig, mesh, device) -> torch.nn.Module:
    """The init weights (the init checkpoint's or HF model's, else the seed's), frozen, in eval
    mode, without adapters: with LoRA the base the adapters start from. Build it before resuming:
    building re-seeds torch's RNG, which a resume then restores."""
    ref, _ = build_model(cfg.model, cfg.optimizer, cfg.fsdp, mesh, device)
    resume.load_init(ref, cfg, dist.get_rank())
    ref.requires_grad_(False)
    return ref.eval()


def sequence_logps(model, b: Batch, device) -> torch.Tensor:
    """Sum of the answer tokens' log-probabilities per row: (rows,)."""
    logits = model(b.x.to(device)).float()  # (R, T, V)
    lp = torch.gather(F.log_softmax(logits, -1), 2, b.y.to(device)[..., None])[..., 0]  # (R, T)
    return (lp * b.weight.to(device)).sum(1)


def pair_figures(policy: torch.Tensor, ref: torch.Tensor, beta: float):
    """(loss per pair, chosen rewards, rejected rewards) from rows [chosen..., rejected...]."""
    n = policy.shape[0] // 2
    chosen = beta * (policy[:n] - ref[:n])
    rejected = beta * (policy[n:] - ref[n:])
    return -F.logsigmoid(chosen - rejected), chosen, rejected


def _sums(losses, chosen, rejected, w) -> torch.Tensor:
    """(loss, chosen, rejected, margin, correct, pairs) summed over the weighted pairs."""
    margin = chosen - rejected
    return torch.stack(
        [
            (x * w).sum().double()
            for x in (losses, chosen, rejected, margin, (margin > 0).float(), torch.ones_like(w))
        ]
    )


def figures(sums: torch.Tensor) -> dict[str, float]:
    """TRL's names: rewards/chosen, rewards/rejected, rewards/margins, rewards/accuracies (means)."""
    loss, chosen, rejected, margin, correct, n = (sums / sums[5].clamp(min=1)).tolist()
    return {
        "loss": loss,
        "rewardsChosen": chosen,
        "rewardsRejected": rejected,
        "rewardsMargin": margin,
        "rewardsAccuracy": correct,
    }


def dpo_step(model, ref, optimizer, batches, accum: int, grad_clip: float, device, beta: float):
    """One optimizer step; returns (this rank's mean loss, grad norm, figures over every rank's pairs)."""
    total = torch.zeros((), device=device)
    sums = torch.zeros(6, dtype=torch.float64, device=device)
    for a, b in enumerate(batches):
        if isinstance(model, FSDPModule):
            model.set_requires_gradient_sync(a == accum - 1)
        with torch.no_grad():
            ref_lp = sequence_logps(ref, b, device)
        losses, chosen, rejected = pair_figures(sequence_logps(model, b, device), ref_lp, beta)
        loss = losses.mean() / accum
        loss.backward()
        total += loss.detach()
        sums += _sums(losses.detach(), chosen.detach(), rejected.detach(), torch.ones_like(chosen))
    norm = apply_gradients(model, optimizer, grad_clip)
    dist.all_reduce(sums)
    return total, norm, figures(sums)


@torch.no_grad()
def evaluate(
    model, ref, cfg: TrainConfig, held_out: pairs.PairSet, rank: int, world: int, device
) -> dict[str, float]:
    """DPO loss and figures over the first eval.batches x batch validation pairs (held out)."""
    o = cfg.optimizer
    n = min(cfg.eval.batches * cfg.batch_seqs, held_out.pairs)
    sums = torch.zeros(6, dtype=torch.float64, device=device)
    model.eval()
    pad = cfg.sources[0].manifest.eos_id
    for b, w in pairs.validation_pairs(held_out, n, o.micro_batch, rank, world, o.seq_len, pad):
        losses, chosen, rejected = pair_figures(
            sequence_logps(model, b, device), sequence_logps(ref, b, device), cfg.dpo.beta
        )
        sums += _sums(losses, chosen, rejected, w.to(device))
    dist.all_reduce(sums)
    model.train()
    return figures(sums)
