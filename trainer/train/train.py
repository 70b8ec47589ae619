"""The TrainingRun workload: `torchrun [elastic flags] -m capstan_trainer.train -f trainingrun.yaml`.

Reads top to bottom: config -> process group -> model on meta -> shard -> init -> optimizer ->
resume -> loop (metrics, eval, checkpoints) -> destroy the process group.

The -f file is a TrainingRun resource as the user wrote it or as the operator resolved it: the
operator replaces each `datasets[i].datasetRef` by `datasets[i].uri` (that Dataset's manifest URI)
and `init.fromTrainingRun` by `init.checkpointUri`, and fills in `checkpoint.uri`; an unresolved
reference is a config error here. Exit codes are in `exitcodes`: 0 done (also early-stopped);
3 invalid config (permanent); anything else is retryable. `--validate-only` checks the file, the
data and the storage, then exits (0 or 3) without starting any process group: run it before
torchrun so a bad spec never burns restarts. Running without torchrun works too (a one-process
group on loopback). Metrics go to stdout as JSON lines and to `progress.json` (see `metrics`).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys
import time
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.elastic.multiprocessing.errors import record
from torch.distributed.fsdp import FSDPModule

from capstan_api import exitcodes
from capstan_api.common import InvalidResource
from capstan_api.resource import load_resource
from capstan_api.trainingrun import TrainingRunSpec
from capstan_trainer import checkpoint, storage
from capstan_trainer.model import ModelConfig, Transformer
from capstan_trainer.train import loader, metrics, parallel, stopping
from capstan_trainer.train.config import ConfigError, TrainConfig, resolve

log = logging.getLogger("capstan.train")


def lr_at(step: int, peak: float, floor: float, warmup: int, total: int) -> float:
    """Linear warmup to `peak` over `warmup` steps, then cosine down to `floor` at `total`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * progress))


def build_model(model_cfg: ModelConfig, spec, mesh, device) -> tuple[Transformer, torch.dtype]:
    """Build on the meta device, apply AC / compile / FSDP2, then materialise and initialise.
    Returns (model, parameter dtype in compute)."""
    o = spec.optimizer
    torch.manual_seed(o.seed)
    with torch.device("meta"):
        model = Transformer(model_cfg)
    if spec.fsdp.activation_checkpointing == "full":
        parallel.apply_ac(model)
    if spec.fsdp.compile:
        parallel.apply_compile(model)
    param_dtype, reduce_dtype = parallel.dtypes(o.precision, device)
    sharded = parallel.fsdp_needed(mesh.size(), param_dtype, reduce_dtype)
    if sharded:
        parallel.apply_fsdp(model, mesh, param_dtype, reduce_dtype, spec.fsdp.reshard_after_forward)
    else:
        log.info("FSDP2 not applied: one process in full precision (plain module, same math)")
    model.to_empty(device=device)
    if not sharded:
        model.tie_weights()  # to_empty unties a plain module's shared embedding
    model.init_weights(seed=o.seed)
    return model, param_dtype


def build_optimizer(model: Transformer, spec) -> torch.optim.AdamW:
    o = spec.optimizer
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]  # norms
    groups = [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), eps=1e-8)


def train_step(
    model, optimizer, batches, accum: int, grad_clip: float, device
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step over `accum` micro-batches; returns (this rank's mean loss, grad norm)."""
    total = torch.zeros((), device=device)
    for a, (x, y) in enumerate(batches):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if isinstance(model, FSDPModule):
            # Reduce-scatter gradients only on the last micro-batch; earlier ones accumulate locally.
            model.set_requires_gradient_sync(a == accum - 1)
        logits = model(x)  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten()) / accum
        loss.backward()
        total += loss.detach()
    if grad_clip > 0:
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip, foreach=True)
    else:
        norm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total, norm


@torch.no_grad()
def evaluate(model, cfg: TrainConfig, rank: int, world: int, device) -> dict[str, float]:
    """Mean validation loss per source over its first eval.batches x global-batch windows."""
    o = cfg.spec.optimizer
    out = {}
    model.eval()
    for i, src in enumerate(cfg.sources):
        n = min(cfg.spec.eval.batches * cfg.batch_seqs, src.validation.windows(o.seq_len))
        sums = torch.zeros(2, dtype=torch.float64, device=device)  # (weighted loss, weight)
        for x, y, w in loader.validation_batches(
            [s.validation for s in cfg.sources], i, o.seq_len, n, o.micro_batch, rank, world
        ):
            logits = model(x.to(device))
            per_seq = F.cross_entropy(logits.transpose(1, 2).float(), y.to(device), reduction="none").mean(1)
            w = w.to(device)
            sums += torch.stack([(per_seq * w).sum().double(), w.sum().double()])
        dist.all_reduce(sums)
        out[src.uri] = (sums[0] / sums[1]).item()
    model.train()
    return out


def state_for(model, optimizer, step: int, cursor: int, watch: stopping.ValidationWatch) -> dict:
    msd, osd = get_state_dict(model, optimizer)
    return {
        "model": msd,
        "optimizer": osd,
        "scheduler": {"step": step},
        "loader": {"sequences_consumed": cursor},
        "rng": {"torch": torch.get_rng_state()},
        "validation": {"watch": watch.to_json()},
    }


def fault_planned(step: int) -> bool:
    """Tests only: CAPSTAN_FAULT_KILL_STEPS="25" or "15,33": on restart k the last rank SIGKILLs
    itself right after finishing the k-th listed step (a real crash torchrun must recover from)."""
    plan = os.environ.get("CAPSTAN_FAULT_KILL_STEPS")
    restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    steps = [int(s) for s in plan.split(",")] if plan else []
    return restart < len(steps) and step == steps[restart]


def inject_fault(rank: int, world: int) -> None:
    dist.barrier()
    if rank == world - 1:
        os.kill(os.getpid(), signal.SIGKILL)


def run(cfg: TrainConfig) -> int:
    spec, o = cfg.spec, cfg.spec.optimizer
    root = spec.checkpoint.uri

    # ---- process group --------------------------------------------------------------------
    if "RANK" not in os.environ:  # plain `python -m capstan_trainer.train`: a one-process group
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    metrics.setup_logging(rank)
    accum = cfg.accumulation(world)  # ConfigError before any collective
    device, backend = parallel.device_and_backend(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, store=_attempt_store(world), rank=rank, world_size=world)
    mesh = init_device_mesh(device.type, (world,))
    ckpt_group = checkpoint.new_checkpoint_group()
    log.info("world size %d, %d micro-batch(es) of %d x %d per step", world, accum, o.micro_batch, o.seq_len)

    # ---- model: meta -> shard -> init -----------------------------------------------------
    model, param_dtype = build_model(cfg.model, spec, mesh, device)
    optimizer = build_optimizer(model, spec)
    stop = spec.eval.early_stopping
    watch = stopping.ValidationWatch(stop.patience, stop.min_delta)
    log.info("model: %s, %.2fM parameters", cfg.model, cfg.model.num_params() / 1e6)

    # ---- resume, or start from an initial checkpoint ---------------------------------------
    ckpt = checkpoint.Checkpointer(root, spec.checkpoint.keep_last, rank, ckpt_group)
    if rank == 0:
        ckpt.remove_uncommitted()
    dist.barrier()
    step, cursor = 0, 0
    latest = checkpoint.latest_committed(root)
    if latest is not None:
        state = state_for(model, optimizer, 0, 0, watch)
        checkpoint.load_state(latest.uri, state)
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
        step, cursor = int(state["scheduler"]["step"]), int(state["loader"]["sequences_consumed"])
        torch.set_rng_state(state["rng"]["torch"])
        watch.load_json(state["validation"]["watch"])
        ckpt.last_committed = latest
    elif cfg.init_checkpoint:
        msd = get_model_state_dict(model)
        checkpoint.load_state(cfg.init_checkpoint, {"model": msd})
        set_model_state_dict(model, msd)
    if rank == 0:
        metrics.emit({"event": "start", "step": step, "resumedFrom": latest.uri if latest else None,
                      "init": cfg.init_checkpoint or None, "worldSize": world, "accumulation": accum})  # fmt: skip

    # ---- data -----------------------------------------------------------------------------
    order = loader.SequenceOrder(
        [s.train.windows(o.seq_len) for s in cfg.sources], [s.weight for s in cfg.sources],
        [s.fingerprint for s in cfg.sources], o.seed,
    )  # fmt: skip
    data = loader.TrainLoader(
        [s.train for s in cfg.sources], order, o.seq_len, o.micro_batch, cfg.batch_seqs, rank, world, cursor
    )
    tokenizer = storage.read_bytes(cfg.tokenizer_uri) if rank == 0 else None
    meta = {"model": cfg.model.to_dict(), "tokenizer": "tokenizer.json", "dataset": cfg.dataset_meta(),
            "trainingRun": cfg.name, "seqLen": o.seq_len, "eosId": cfg.sources[0].manifest.eos_id,
            "init": cfg.init_checkpoint or None}  # fmt: skip

    # ---- loop -----------------------------------------------------------------------------
    progress = metrics.Progress(root, o.total_steps, world) if rank == 0 else None
    fpt = metrics.flops_per_token(cfg.model, o.seq_len)
    peak, peak_name = metrics.peak_flops(device)
    if param_dtype != torch.bfloat16:
        peak = None  # the table is bf16 tensor-core peaks; fp32 MFU would mislead
    phase, last_eval, interval_tokens, t_last = "Succeeded", None, 0, time.perf_counter()

    def save(at: int) -> None:
        blocked = ckpt.save(at, state_for(model, optimizer, at, data.cursor, watch), meta, tokenizer)
        if rank == 0:
            metrics.emit({"event": "checkpoint", "step": at, "blockingSeconds": round(blocked, 4)})

    def committed(folder) -> None:
        if folder is not None and rank == 0:
            metrics.emit({"event": "committed", "step": folder.step, "uri": folder.uri})
            progress.update(force=True, last_checkpoint={"uri": folder.uri, "step": folder.step})

    if progress:
        resumed = {"uri": latest.uri, "step": latest.step} if latest else None
        progress.update(
            force=True, phase="Running", step=step, tokens_seen=cursor * o.seq_len, last_checkpoint=resumed
        )
    # SIGTERM (suspend, preemption, pod deletion; torchrun forwards it and allows 30 s) asks for a
    # checkpoint of the step reached, then exit. Ranks agree on the step through the loss
    # all-reduce they do anyway: a second element carries "some rank was asked to stop". Every
    # rank reads it every step (one host sync per step on GPU) because a stop seen at different
    # steps would leave the ranks in different collectives; torchrun allows only 30 s.
    term = {"asked": False}
    signal.signal(signal.SIGTERM, lambda *_: term.update(asked=True))
    model.train()
    while step < o.total_steps:
        lr = lr_at(step, o.lr, o.min_lr, o.warmup_steps, o.total_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss, norm = train_step(model, optimizer, data.step_batches(), accum, o.grad_clip, device)
        synced = torch.stack([loss.detach().reshape(()), loss.new_tensor(float(term["asked"]))])
        dist.all_reduce(synced)  # [sum of ranks' mean losses (divided below), ranks asked to stop]
        loss = synced[0]
        step += 1
        if synced[1].item() > 0:
            phase = "Stopped"
            if rank == 0:
                metrics.emit({"event": "stopped", "step": step, "signal": "SIGTERM"})
            break
        interval_tokens += cfg.batch_seqs * o.seq_len
        committed(ckpt.poll())
        if step % spec.metrics.interval_steps == 0 or step == o.total_steps:
            loss_v = loss.item() / world
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            now = time.perf_counter()
            tps = interval_tokens / (now - t_last)
            mfu = tps / world * fpt / peak if peak else None
            watch.record_train(loss_v)
            if rank == 0:
                rec = {"event": "step", "step": step, "loss": loss_v, "lr": lr, "gradNorm": norm.item(),
                       "tokensPerSec": round(tps, 1), "mfu": mfu, "peakFlops": peak_name,
                       "memGiB": round(metrics.memory_gib(device), 3), "tokensSeen": data.cursor * o.seq_len}  # fmt: skip
                metrics.emit(rec)
                progress.update(
                    step=step,
                    loss=loss_v,
                    lr=lr,
                    tokens_seen=rec["tokensSeen"],
                    tokens_per_sec=rec["tokensPerSec"],
                    mfu=mfu,
                    eval_loss=last_eval,
                )
            interval_tokens, t_last = 0, time.perf_counter()
        if spec.eval.interval_steps and (step % spec.eval.interval_steps == 0 or step == o.total_steps):
            per_source = evaluate(model, cfg, rank, world, device)
            weights = [s.weight for s in cfg.sources]
            last_eval = sum(w * per_source[s.uri] for w, s in zip(weights, cfg.sources, strict=True)) / sum(
                weights
            )
            verdict = watch.observe(last_eval)
            if rank == 0:
                metrics.emit({"event": "eval", "step": step, "evalLoss": last_eval, "bySource": per_source,
                              "trainLoss": verdict.train_loss, "overfitting": verdict.overfitting,
                              "evalsWithoutImprovement": verdict.evals_without_improvement})  # fmt: skip
                progress.update(force=True, eval_loss=last_eval, overfitting=verdict.overfitting)
            if verdict.stop:
                phase = "EarlyStopped"
                if rank == 0:
                    log.info("early stopping at step %d: %d evaluations without improvement", step,
                             verdict.evals_without_improvement)  # fmt: skip
                break
        if step % spec.checkpoint.interval_steps == 0:
            save(step)
        if fault_planned(step):
            # Let the save in flight commit first, so the step a restart resumes from does not
            # depend on upload speed (the tests assert it).
            committed(ckpt.wait())
            inject_fault(rank, world)

    # ---- finish ---------------------------------------------------------------------------
    newest = ckpt.timings[-1]["step"] if ckpt.timings else getattr(ckpt.last_committed, "step", None)
    if newest != step:
        save(step)
    committed(ckpt.wait())
    data.close()
    if rank == 0:
        progress.update(force=True, phase=phase, step=step)
        metrics.emit({"event": "done", "step": step, "phase": phase, "checkpointTimings": ckpt.timings})
    dist.barrier()
    dist.destroy_process_group()
    return exitcodes.STOPPED if phase == "Stopped" else exitcodes.OK


def _attempt_store(world: int) -> dist.Store:
    """The rendezvous store, with keys prefixed by torchrun's restart count.

    Under torchrun the workers of every restart share the agent's store; without a per-attempt
    prefix a restarted rank can read the previous attempt's gloo addresses and fail to connect
    (seen with torch 2.15: "connectFullMesh failed ... Connection refused")."""
    addr, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(addr, port, world, is_master=not agent and int(os.environ["RANK"]) == 0,
                          timeout=timedelta(minutes=10), multi_tenant=True)  # fmt: skip
    return dist.PrefixStore(f"capstan/attempt-{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@record
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="capstan_trainer.train", description="Train a TrainingRun.")
    p.add_argument("-f", "--file", required=True, help="the TrainingRun resource (YAML)")
    p.add_argument("--validate-only", action="store_true", help="check config, data and storage; exit 0 or 3")
    args = p.parse_args(argv)
    try:
        raw, spec = load_resource(args.file, TrainingRunSpec, "TrainingRun")
        cfg = resolve(spec, name=(raw.get("metadata") or {}).get("name", "trainingrun"))
        if args.validate_only:
            print(
                f"{args.file}: valid; {cfg.model.num_params() / 1e6:.2f}M parameters, {len(cfg.sources)} source(s)"
            )
            return exitcodes.OK
        return run(cfg)
    except (InvalidResource, ConfigError) as exc:
        print(f"invalid TrainingRun: {exc}", file=sys.stderr)
        return exitcodes.INVALID_CONFIG
