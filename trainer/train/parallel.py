"""Parallelism transforms, torchtitan style: plain functions applied to the model in order
(activation checkpointing, compile, FSDP2), one log line each."""

from __future__ import annotations

import functools
import logging

import torch
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.utils.checkpoint import checkpoint

from capstan_trainer.model import Transformer

log = logging.getLogger("capstan.parallel")


def device_and_backend(local_rank: int) -> tuple[torch.device, str]:
    """NCCL on GPU (with gloo beside it for CPU-side collectives such as async checkpoints)."""
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank), "cpu:gloo,cuda:nccl"
    return torch.device("cpu"), "gloo"


def dtypes(precision: str, device: torch.device) -> tuple[torch.dtype, torch.dtype]:
    """(param dtype in compute, gradient reduce dtype). auto: bf16/fp32 on GPU, fp32 on CPU."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16, torch.float32
    return torch.float32, torch.float32


def apply_ac(model: Transformer) -> None:
    """Recompute each block's activations in backward. The forward is wrapped on the instance,
    so parameter names (and so checkpoints and the HF export) stay unchanged."""
    for block in model.layers:
        block.forward = functools.partial(checkpoint, block.forward, use_reentrant=False)
    log.info("activation checkpointing: full, on %d blocks", len(model.layers))


def apply_compile(model: Transformer, backend: str = "inductor") -> None:
    """torch.compile each block in place (Module.compile keeps parameter names). fullgraph: a
    graph break is an error, not a silent slowdown. Tests pass backend="aot_eager" to check the
    capture without paying for inductor's code generation."""
    for block in model.layers:
        block.compile(fullgraph=True, backend=backend)
    log.info("torch.compile (%s) applied to %d blocks", backend, len(model.layers))


def fsdp_needed(world: int, param_dtype: torch.dtype, reduce_dtype: torch.dtype) -> bool:
    """FSDP2 earns its keep with several ranks or for its mixed-precision policy. One process in
    full precision gains nothing from it and pays for it: DTensor dispatch on every optimizer
    op and the all-gather copies (measured 0.83 of a plain loop's throughput on CPU; see
    bench/trainer_step.py). The math is the same either way: a reduction over one rank in fp32
    is the identity."""
    return world > 1 or param_dtype != torch.float32 or reduce_dtype != torch.float32


def apply_fsdp(
    model: Transformer,
    mesh: DeviceMesh,
    param_dtype: torch.dtype,
    reduce_dtype: torch.dtype,
    reshard_after_forward: bool,
) -> None:
    """FSDP2: shard each block, then the root (embedding, final norm, output projection)."""
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype)
    for i, block in enumerate(model.layers):
        # The last block's parameters are needed again at once by backward: keep them gathered.
        last = i == len(model.layers) - 1
        fully_shard(block, mesh=mesh, mp_policy=mp, reshard_after_forward=reshard_after_forward and not last)
    fully_shard(model, mesh=mesh, mp_policy=mp, reshard_after_forward=reshard_after_forward)
    log.info(
        "FSDP2 over %d ranks: params %s, reduce %s, reshard after forward %s",
        mesh.size(),
        param_dtype,
        reduce_dtype,
        reshard_after_forward,
    )
