"""The TrainingRun workload: `torchrun [elastic flags] -m capstan_trainer.train -f trainingrun.yaml`.

Reads top to bottom: config -> process group -> model on meta -> shard -> init -> optimizer ->
resume -> loop (metrics, eval, checkpoints) -> finish -> destroy the process group.

The -f file is a TrainingRun resource as the user wrote it or as the operator resolved it: the
operator replaces each `datasets[i].datasetRef` by `datasets[i].uri` (that Dataset's manifest URI)
and `init.fromTrainingRun` by `init.checkpointUri`, and fills in `checkpoint.uri`; an unresolved
reference is a config error here. Exit codes are in `exitcodes`: 0 done (also early-stopped);
3 invalid config (permanent); 4 stopped after checkpointing on SIGTERM (the pod's `launch`
reports it; torchrun would say 1); anything else is retryable. `--validate-only` checks the file, the
data and the storage, then exits (0 or 3) without starting any process group: run it before
torchrun so a bad spec never burns restarts. Running without torchrun works too (a one-process
group on loopback). Metrics go to stdout as JSON lines and to `progress.json` (see `metrics`).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.elastic.multiprocessing.errors import record

from capstan_api import exitcodes, files
from capstan_api.common import InvalidResource
from capstan_api.objective import DpoFigures
from capstan_api.resource import load_resource
from capstan_api.status import Phase
from capstan_api.trainingrun import TrainingRunSpec
from capstan_trainer import checkpoint, storage
from capstan_trainer.train import (
    dpo,
    fault_hook,
    launch,
    loader,
    metrics,
    pairs,
    parallel,
    replay,
    resume,
    stopping,
)
from capstan_trainer.train.compute import ComputeMeter
from capstan_trainer.train.config import ConfigError, TrainConfig, resolve
from capstan_trainer.train.step import (
    build_model,
    build_optimizer,
    evaluate,
    lr_at,
    parameter_counts,
    state_for,
    train_step,
)

log = logging.getLogger("capstan.train")


def run(cfg: TrainConfig) -> int:
    o = cfg.optimizer

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

    # ---- model: meta -> shard -> init, then the optimizer ---------------------------------
    model, param_dtype = build_model(cfg.model, o, cfg.fsdp, mesh, device, cfg.lora)
    optimizer = build_optimizer(model, o)
    stop = cfg.eval.early_stopping
    watch = stopping.ValidationWatch(stop.patience, stop.min_delta)
    trainable, total = parameter_counts(model)
    log.info("model: %s, %.2fM parameters, %d trainable", cfg.model, total / 1e6, trainable)

    # DPO's frozen reference (the init weights), built before a resume restores the RNG.
    ref = dpo.reference_model(cfg, mesh, device) if cfg.objective == "dpo" else None

    # ---- resume, or start from an initial checkpoint ---------------------------------------
    ckpt = checkpoint.Checkpointer(cfg.checkpoint.uri, cfg.checkpoint.keep_last, rank, ckpt_group)
    step, cursor, latest, skipped = resume.resume(cfg, ckpt, model, optimizer, watch, rank)
    if rank == 0:
        metrics.emit(
            {
                "event": "start",
                "step": step,
                "resumedFrom": latest.uri if latest else None,
                "skippedUnreadable": [s["uri"] for s in skipped],
                "init": cfg.init_checkpoint or cfg.init_hf or None,
                "objective": cfg.objective,
                "worldSize": world,
                "accumulation": accum,
                "trainableParams": trainable,
                "totalParams": total,
            }
        )

    # ---- data, then the loop (metrics, eval, checkpoints) ----------------------------------
    s = Session(
        cfg=cfg,
        rank=rank,
        world=world,
        accum=accum,
        device=device,
        model=model,
        optimizer=optimizer,
        watch=watch,
        ckpt=ckpt,
        step=step,
        ref=ref,
        data=open_loader(cfg, rank, world, cursor),
        tokenizer=storage.read_bytes(cfg.tokenizer_uri) if rank == 0 else None,
        meta=checkpoint_meta(cfg) | {"precision": str(param_dtype).removeprefix("torch.")},
        compute=ComputeMeter(
            world,
            device.type == "cuda",
            cfg.planned_gpu_hours,
            ComputeMeter.prior(checkpoint.read_meta(latest.uri) if latest else None),
        ),
        throughput=metrics.Throughput.start(cfg.model, o.seq_len, device, param_dtype, world),
        progress=open_progress(cfg, world, step, cursor, latest, skipped, (trainable, total))
        if rank == 0
        else None,
    )
    s.exporter.serve_from_env()
    phase = train_loop(s)

    # ---- finish ---------------------------------------------------------------------------
    finish(s, phase)
    dist.barrier()
    dist.destroy_process_group()
    return exitcodes.STOPPED if phase == Phase.STOPPED else exitcodes.OK


@dataclass
class Session:
    """What setup builds for one rank's loop and finish; the loop advances `step`."""

    cfg: TrainConfig
    rank: int
    world: int
    accum: int
    """accum: micro-batches per rank per step."""
    device: torch.device
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    watch: stopping.ValidationWatch
    ckpt: checkpoint.Checkpointer
    step: int
    """step: optimizer steps completed, counting those before a resume."""
    ref: torch.nn.Module | None
    """ref: DPO's frozen reference model; None for other objectives."""
    data: loader.TrainLoader | pairs.PairLoader
    tokenizer: bytes | None
    """tokenizer: tokenizer.json's bytes on rank 0 (copied into each checkpoint); None elsewhere."""
    meta: dict
    """meta: each checkpoint's capstan.json, less the step."""
    throughput: metrics.Throughput
    progress: metrics.Progress | None
    """progress: progress.json; rank 0 only."""
    compute: ComputeMeter
    """compute: process- and GPU-hours measured, summed over restarts (capstan.json)."""
    exporter: metrics.Exporter = field(default_factory=metrics.Exporter)
    """exporter: /metrics for Prometheus; rank 0 sets its values."""
    last_eval: float | None = None
    """last_eval: the newest mixture-weighted validation loss; None before the first evaluation."""
    loss_tokens: int | None = None
    """loss_tokens: targets that carried loss in the last step (all ranks); None without a loss mask."""
    dpo: dict | None = None
    """dpo: the last step's DPO figures (dpo.figures), with the last evaluation's accuracy."""
    overfitting: bool = False
    """overfitting: the newest evaluation's overfitting signal (stopping.Verdict)."""

    def save(self, at: int) -> None:
        state = state_for(self.model, self.optimizer, at, self.data.cursor, self.watch)
        meta = self.meta | {
            "compute": self.compute.to_meta(self.data.cursor * self.cfg.optimizer.seq_len),
            "validation": {"evalLoss": self.last_eval, "overfitting": self.overfitting},
        }
        blocked = self.ckpt.save(at, state, meta, self.tokenizer)
        if self.rank == 0:
            metrics.emit({"event": "checkpoint", "step": at, "blockingSeconds": round(blocked, 4)})

    def committed(self, folder: checkpoint.StepFolder | None) -> None:
        if folder is not None and self.rank == 0:
            metrics.emit({"event": "committed", "step": folder.step, "uri": folder.uri})
            self.progress.update(force=True, last_checkpoint={"uri": folder.uri, "step": folder.step})


def open_loader(
    cfg: TrainConfig, rank: int, world: int, cursor: int
) -> loader.TrainLoader | pairs.PairLoader:
    """This rank's batches from `cursor` sequences (DPO: pairs) on, in the order the seed fixes."""
    o, sources = cfg.optimizer, cfg.sources
    if cfg.objective == "dpo":
        src = sources[0]
        train_pairs = pairs.PairSet.open(src.train, src.train_mask)
        return pairs.PairLoader(
            train_pairs,
            src.fingerprint,
            o.seed,
            o.seq_len,
            o.micro_batch,
            cfg.batch_seqs,
            rank,
            world,
            pad=src.manifest.eos_id,
            cursor=cursor,
        )
    order = loader.SequenceOrder(
        [s.train.windows(o.seq_len) for s in sources],
        [s.weight for s in sources],
        [s.fingerprint for s in sources],
        o.seed,
    )
    splits = [s.train for s in sources]
    masks = [s.train_mask for s in sources] if cfg.objective == "sft" else None
    return loader.TrainLoader(
        splits, order, o.seq_len, o.micro_batch, cfg.batch_seqs, rank, world, cursor, masks=masks
    )


def checkpoint_meta(cfg: TrainConfig) -> dict:
    """capstan.json: what the export, the model card and `init` read back."""
    return {
        "model": cfg.model.to_dict(),
        "optimizer": cfg.optimizer.to_wire(),  # the hyperparameters the model card reports
        "tokenizer": "tokenizer.json",
        "dataset": cfg.dataset_meta(),
        "trainingRun": cfg.name,
        "seqLen": cfg.optimizer.seq_len,
        "eosId": cfg.sources[0].manifest.eos_id,
        "init": cfg.init_checkpoint or cfg.init_hf or None,
        "owner": resume.owner(cfg),
        **({"stopIds": cfg.stop_ids} if cfg.stop_ids else {}),
        # The loaders (export, evaluation, serving) add these adapters, then merge them.
        **({"lora": cfg.lora.to_wire()} if cfg.lora else {}),
        "order": replay.order_meta(cfg),
    }


def open_progress(
    cfg: TrainConfig,
    world: int,
    step: int,
    cursor: int,
    latest: checkpoint.StepFolder | None,
    skipped: list[dict],
    params: tuple[int, int] = (0, 0),
) -> metrics.Progress:
    """progress.json, saying Running from the step reached and which checkpoints were unreadable (rank 0)."""
    progress = metrics.Progress(cfg.checkpoint.uri, cfg.optimizer.total_steps, world)
    resumed = {"uri": latest.uri, "step": latest.step} if latest else None
    progress.update(
        force=True,
        phase=Phase.RUNNING,
        step=step,
        tokens_seen=cursor * cfg.optimizer.seq_len,
        last_checkpoint=resumed,
        unreadable_checkpoints=skipped,
        replay=replay.recorded(cfg),
        trainable_params=params[0] or None,
        total_params=params[1] or None,
    )
    return progress


def train_loop(s: Session) -> str:
    """Optimizer steps until totalSteps, SIGTERM or early stopping; returns the phase to report."""
    cfg, o = s.cfg, s.cfg.optimizer
    # SIGTERM (suspend, preemption, pod deletion; torchrun forwards it and allows 30 s) asks for a
    # checkpoint of the step reached, then exit. Ranks agree on the step through the loss
    # all-reduce they do anyway: a second element carries "some rank was asked to stop". Every
    # rank reads it every step (one host sync per step on GPU) because a stop seen at different
    # steps would leave the ranks in different collectives; torchrun allows only 30 s.
    term = {"asked": False}
    signal.signal(signal.SIGTERM, lambda *_: term.update(asked=True))
    s.model.train()
    while s.step < o.total_steps:
        lr = lr_at(s.step, o.lr, o.min_lr, o.warmup_steps, o.total_steps)
        for group in s.optimizer.param_groups:
            group["lr"] = lr
        if s.ref is not None:
            loss, norm, figs = dpo.dpo_step(
                s.model,
                s.ref,
                s.optimizer,
                s.data.step_batches(),
                s.accum,
                o.grad_clip,
                s.device,
                cfg.dpo.beta,
            )
            s.dpo = {**figs, "evalRewardsAccuracy": (s.dpo or {}).get("evalRewardsAccuracy")}
        else:
            loss, norm, s.loss_tokens = train_step(
                s.model, s.optimizer, s.data.step_batches(), s.accum, o.grad_clip, s.device
            )
        synced = torch.stack([loss.detach().reshape(()), loss.new_tensor(float(term["asked"]))])
        dist.all_reduce(synced)  # [sum of ranks' mean losses (divided below), ranks asked to stop]
        loss = synced[0]
        s.step += 1
        if synced[1].item() > 0:
            if s.rank == 0:
                metrics.emit({"event": "stopped", "step": s.step, "signal": "SIGTERM"})
            return Phase.STOPPED
        s.throughput.tokens += cfg.batch_seqs * o.seq_len
        s.throughput.steps += 1
        s.committed(s.ckpt.poll())
        if _due(s.step, cfg.metrics.interval_steps, o.total_steps):
            report_step(s, loss, lr, norm)
        if _due(s.step, cfg.eval.interval_steps, o.total_steps) and evaluate_and_watch(s):
            return Phase.EARLY_STOPPED
        if s.step % cfg.checkpoint.interval_steps == 0:
            s.save(s.step)
        if fault_hook.fault_planned(s.step):
            # Let the save in flight commit first, so the step a restart resumes from does not
            # depend on upload speed (the tests assert it).
            s.committed(s.ckpt.wait())
            fault_hook.inject_fault(s.rank, s.world)
    return Phase.SUCCEEDED


def _due(step: int, interval: int, total: int) -> bool:
    """Every `interval` steps and at the last one; never when `interval` is 0."""
    return interval > 0 and (step % interval == 0 or step == total)


def report_step(s: Session, loss: torch.Tensor, lr: float, norm: torch.Tensor) -> None:
    """A step line on stdout and progress.json (rank 0); every rank records the train loss."""
    loss_v = loss.item() / s.world
    tps, mfu = s.throughput.measure(s.device)
    s.watch.record_train(loss_v)
    if s.rank == 0:
        rec = {
            "event": "step",
            "step": s.step,
            "loss": loss_v,
            "lr": lr,
            "gradNorm": norm.item(),
            "tokensPerSec": round(tps, 1),
            "mfu": mfu,
            "peakFlops": s.throughput.peak_name,
            "memGiB": round(metrics.memory_gib(s.device), 3),
            "tokensSeen": s.data.cursor * s.cfg.optimizer.seq_len,
        }
        if s.loss_tokens is not None:
            rec["lossTokens"] = s.loss_tokens
        if s.dpo is not None:
            rec.update({k: v for k, v in s.dpo.items() if k != "loss"})
        metrics.emit(rec)
        s.progress.update(
            step=s.step,
            loss=loss_v,
            lr=lr,
            tokens_seen=rec["tokensSeen"],
            tokens_per_sec=rec["tokensPerSec"],
            mfu=mfu,
            eval_loss=s.last_eval,
            loss_tokens=s.loss_tokens,
            dpo=_dpo_progress(s.dpo),
        )
        s.exporter.update(
            step=s.step,
            total_steps=s.cfg.optimizer.total_steps,
            loss=loss_v,
            tps=tps,
            mfu=mfu,
            step_s=s.throughput.step_seconds(),
            eval_loss=s.last_eval,
        )
    s.throughput.reset()


def _dpo_progress(figs: dict | None) -> DpoFigures | None:
    return None if figs is None else DpoFigures.model_validate({k: v for k, v in figs.items() if k != "loss"})


def evaluate_and_watch(s: Session) -> bool:
    """Validation loss of the mixture (sources weighted as in training); True to stop early."""
    if s.ref is not None:
        return _evaluate_dpo(s)
    per_source = evaluate(s.model, s.cfg, s.rank, s.world, s.device)
    sources = s.cfg.sources
    weights = [src.weight for src in sources]
    s.last_eval = sum(w * per_source[src.uri] for w, src in zip(weights, sources, strict=True)) / sum(weights)
    verdict = s.watch.observe(s.last_eval)
    s.overfitting = verdict.overfitting
    if s.rank == 0:
        metrics.emit(
            {
                "event": "eval",
                "step": s.step,
                "evalLoss": s.last_eval,
                "bySource": per_source,
                "trainLoss": verdict.train_loss,
                "overfitting": verdict.overfitting,
                "evalsWithoutImprovement": verdict.evals_without_improvement,
            }
        )
        s.progress.update(force=True, eval_loss=s.last_eval, overfitting=verdict.overfitting)
    if verdict.stop and s.rank == 0:
        n = verdict.evals_without_improvement
        log.info("early stopping at step %d: %d evaluations without improvement", s.step, n)
    return verdict.stop


def _evaluate_dpo(s: Session) -> bool:
    """DPO loss and figures on the held-out pairs; the loss is what early stopping watches."""
    src = s.cfg.sources[0]
    held_out = pairs.PairSet.open(src.validation, src.validation_mask)
    figs = dpo.evaluate(s.model, s.ref, s.cfg, held_out, s.rank, s.world, s.device)
    s.last_eval = figs["loss"]
    s.dpo = {**(s.dpo or {}), "evalRewardsAccuracy": figs["rewardsAccuracy"]}
    verdict = s.watch.observe(s.last_eval)
    if s.rank == 0:
        eval_figs = {f"eval{k[0].upper()}{k[1:]}": v for k, v in figs.items()}
        metrics.emit(
            {
                "event": "eval",
                "step": s.step,
                **eval_figs,
                "evalsWithoutImprovement": verdict.evals_without_improvement,
            }
        )
        s.progress.update(
            force=True, eval_loss=s.last_eval, overfitting=verdict.overfitting, dpo=_dpo_progress(s.dpo)
        )
    return verdict.stop


def finish(s: Session, phase: str) -> None:
    """Checkpoint the step reached unless the newest save is of it, wait for the commit, report."""
    ck = s.ckpt
    newest = ck.timings[-1]["step"] if ck.timings else getattr(ck.last_committed, "step", None)
    if newest != s.step:
        s.save(s.step)
    s.committed(ck.wait())
    s.data.close()
    if s.rank == 0:
        s.progress.update(force=True, phase=phase, step=s.step)
        metrics.emit({"event": "done", "step": s.step, "phase": phase, "checkpointTimings": ck.timings})


def _attempt_store(world: int) -> dist.Store:
    """The rendezvous store, with keys prefixed by torchrun's restart count.

    Under torchrun the workers of every restart share the agent's store; without a per-attempt
    prefix a restarted rank can read the previous attempt's gloo addresses and fail to connect
    (seen with torch 2.15: "connectFullMesh failed ... Connection refused")."""
    addr, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(
        addr,
        port,
        world,
        is_master=not agent and int(os.environ["RANK"]) == 0,
        timeout=timedelta(minutes=10),
        multi_tenant=True,
    )
    if not agent:
        # A store of this round's own (rank 0 serves it on a fresh port): nothing stale in it, and
        # a pod that joined later (its agent's restart count differs) must use the same keys.
        return store
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
        meta = raw.get("metadata") or {}
        # The init container runs --validate-only once per gang: it pays for reading every shard.
        cfg = resolve(
            spec, name=meta.get("name", "trainingrun"), checksums=args.validate_only, uid=meta.get("uid", "")
        )
        cfg.planned_gpu_hours = files.planned_gpu_hours(meta)
        if args.validate_only:
            resume.own_checkpoints(cfg)  # another run's checkpoints at the root: exit 3 naming them
            print(
                f"{args.file}: valid; {cfg.model.num_params() / 1e6:.2f}M parameters, {len(cfg.sources)} source(s)"
            )
            return exitcodes.OK
        code = run(cfg)
        if code == exitcodes.STOPPED:
            launch.mark_stopped()  # after the commit: the pod's launcher then exits STOPPED too
        return code
    except (InvalidResource, ConfigError) as exc:
        print(f"invalid TrainingRun: {exc}", file=sys.stderr)
        return exitcodes.INVALID_CONFIG
