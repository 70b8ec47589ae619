"""The pieces one training step is made of: the learning-rate schedule, the model (meta ->
AC / compile / FSDP2 -> init) and its optimizer, the step itself, the validation pass, and the
state a checkpoint holds."""

from __future__ import annotations

import itertools
import logging
import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.checkpoint.state_dict import get_state_dict
from torch.distributed.fsdp import FSDPModule

from capstan_api.lora import LoraSpec
from capstan_api.training import FsdpSpec, OptimizerSpec
from capstan_trainer import lora as lora_layers
from capstan_trainer.model import ModelConfig, Transformer
from capstan_trainer.train import loader, parallel, stopping
from capstan_trainer.train.config import TrainConfig

log = logging.getLogger("capstan.train")


def lr_at(step: int, peak: float, floor: float, warmup: int, total: int) -> float:
    """Linear warmup to `peak` over `warmup` steps, then cosine down to `floor` at `total`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * progress))


def build_model(
    model_cfg: ModelConfig, o: OptimizerSpec, fsdp: FsdpSpec, mesh, device, lora: LoraSpec | None = None
) -> tuple[Transformer, torch.dtype]:
    """Build on the meta device, add LoRA adapters (base frozen) when `lora` is given, apply AC /
    compile / FSDP2, then materialise and initialise. Returns (model, parameter dtype in compute)."""
    torch.manual_seed(o.seed)
    with torch.device("meta"):
        model = Transformer(model_cfg)
    if lora is not None:
        # Before FSDP2: each block's adapters join its FSDP unit beside the frozen weights.
        added = lora_layers.apply_lora(model, lora)
        log.info("LoRA rank %d on %s: %d adapter parameters", lora.rank, ",".join(lora.target_modules), added)
    if fsdp.activation_checkpointing == "full":
        parallel.apply_ac(model)
    if fsdp.compile:
        parallel.apply_compile(model)
    param_dtype, reduce_dtype = parallel.dtypes(o.precision, device)
    sharded = parallel.fsdp_needed(mesh.size(), param_dtype, reduce_dtype)
    if sharded:
        parallel.apply_fsdp(model, mesh, param_dtype, reduce_dtype, fsdp.reshard_after_forward)
    else:
        log.info("FSDP2 not applied: one process in full precision (plain module, same math)")
    model.to_empty(device=device)
    if not sharded:
        model.tie_weights()  # to_empty unties a plain module's shared embedding
    model.init_weights(seed=o.seed)
    if lora is not None:
        lora_layers.init_adapters(model)  # B = 0: the base model's outputs until the first step
    return model, param_dtype


def parameter_counts(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters, counted once each (a tied embedding is one)."""
    params = {id(p): p for p in model.parameters()}.values()
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def build_optimizer(model: Transformer, o: OptimizerSpec) -> torch.optim.AdamW:
    # Frozen weights (LoRA's base) get no optimizer state; adapters are matrices, so they decay.
    trainable = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in trainable if p.ndim >= 2]
    no_decay = [p for p in trainable if p.ndim < 2]  # norms
    groups = [
        {"params": decay, "weight_decay": o.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), eps=1e-8)


def train_step(
    model, optimizer, batches, accum: int, grad_clip: float, device
) -> tuple[torch.Tensor, torch.Tensor, int | None]:
    """One optimizer step over `accum` micro-batches; returns (this rank's share of the mean loss,
    grad norm, tokens that carried loss in the global batch or None without a loss mask).

    With a loss mask the loss is the mean over every rank's masked targets of the step, so a
    micro-batch with more assistant tokens weighs more: the step's count comes first."""
    it = iter(batches)
    first = next(it)
    batches = itertools.chain([first], it)  # pretraining streams its micro-batches
    scale = count = None
    if first.weight is not None:
        batches = [first, *it]
        counted = torch.stack([b.weight.sum() for b in batches]).sum().to(device, torch.float64)
        dist.all_reduce(counted)
        count = int(counted.item())
        # Gradients are averaged over ranks (FSDP2), so each rank's sum is scaled by world / count.
        scale = dist.get_world_size() / max(count, 1)
    total = torch.zeros((), device=device)
    for a, b in enumerate(batches):
        x, y = b.x.to(device, non_blocking=True), b.y.to(device, non_blocking=True)
        if isinstance(model, FSDPModule):
            # Reduce-scatter gradients only on the last micro-batch; earlier ones accumulate locally.
            model.set_requires_gradient_sync(a == accum - 1)
        if scale is None:
            logits = model(x)  # (B, T, V)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten()) / accum
        else:
            logits = model(x, b.docs.to(device))
            ce = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="none")
            loss = (ce * b.weight.to(device).flatten()).sum() * scale
        loss.backward()
        total += loss.detach()
    return total, apply_gradients(model, optimizer, grad_clip), count


def apply_gradients(model, optimizer, grad_clip: float) -> torch.Tensor:
    """Clip (when grad_clip > 0), step, zero; returns the gradient norm before clipping."""
    if grad_clip > 0:
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip, foreach=True)
    else:
        norm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return norm


@torch.no_grad()
def evaluate(model, cfg: TrainConfig, rank: int, world: int, device) -> dict[str, float]:
    """Mean validation loss per source over its first eval.batches x global-batch windows."""
    o = cfg.optimizer
    splits = [s.validation for s in cfg.sources]
    masks = [s.validation_mask for s in cfg.sources]
    out = {}
    model.eval()
    for i, src in enumerate(cfg.sources):
        n = min(cfg.eval.batches * cfg.batch_seqs, src.validation.windows(o.seq_len))
        sums = torch.zeros(2, dtype=torch.float64, device=device)  # (weighted loss, weight)
        batches = loader.validation_batches(splits, i, o.seq_len, n, o.micro_batch, rank, world, masks)
        for b, w in batches:
            w = w.to(device)
            docs = None if b.docs is None else b.docs.to(device)
            ce = F.cross_entropy(
                model(b.x.to(device), docs).transpose(1, 2).float(), b.y.to(device), reduction="none"
            )
            if b.weight is None:  # every target: the mean per window, windows weighted alike
                sums += torch.stack([(ce.mean(1) * w).sum().double(), w.sum().double()])
            else:  # the masked targets only, each weighing the same
                tw = b.weight.to(device) * w[:, None]
                sums += torch.stack([(ce * tw).sum().double(), tw.sum().double()])
        dist.all_reduce(sums)
        out[src.uri] = (sums[0] / sums[1]).item()
    model.train()
    return out


def state_for(model, optimizer, step: int, cursor: int, watch: stopping.ValidationWatch) -> dict:
    """What a checkpoint holds; also the template a resume loads into."""
    msd, osd = get_state_dict(model, optimizer)
    return {
        "model": msd,
        "optimizer": osd,
        "scheduler": {"step": step},
        "loader": {"sequences_consumed": cursor},
        "rng": {"torch": torch.get_rng_state()},
        "validation": {"watch": watch.to_json()},
    }
