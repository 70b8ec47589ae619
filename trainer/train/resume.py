"""Where a run starts: its own newest readable checkpoint, else the initial weights, else scratch.

A checkpoint root belongs to one run. Each checkpoint's capstan.json records its `owner`: the
TrainingRun's uid (when the operator started it) and a fingerprint of the settings that shape
training (model, data, batch, seed, init). Checkpoints of another owner at the root are refused
(exit 3, naming them) unless `init.checkpointUri` points into the root: then the run continues
from the one named and ignores the rest. A committed checkpoint that cannot be loaded is
un-committed (an UNREADABLE note beside it says why) and the one before is tried.
"""

from __future__ import annotations

import json
import logging

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    set_model_state_dict,
    set_state_dict,
)

from capstan_trainer import checkpoint, lora, storage
from capstan_trainer.train import hfinit, metrics, replay, stopping
from capstan_trainer.train.config import ConfigError, TrainConfig
from capstan_trainer.train.step import state_for

log = logging.getLogger("capstan.train")

UNREADABLE = "UNREADABLE"


def owner(cfg: TrainConfig) -> dict:
    """What each checkpoint of this run records as its owner."""
    return {"uid": cfg.uid, "trainingRun": cfg.name, "fingerprint": cfg.fingerprint}


def foreign(meta: dict, cfg: TrainConfig) -> str | None:
    """Why a checkpoint (its capstan.json) is not this run's; None when it is, or records no owner
    (written before owners were recorded)."""
    o = meta.get("owner")
    if not o:
        return None
    if cfg.uid and o.get("uid") and o["uid"] != cfg.uid:
        return f"written by another TrainingRun {o.get('trainingRun')!r} (uid {o['uid']})"
    if o.get("fingerprint") != cfg.fingerprint:
        return "written with other training settings (model, data, batch, seed or init differ)"
    return None


def _adopting(cfg: TrainConfig) -> bool:
    """init.checkpointUri points into this run's own root: continue from another run's steps."""
    return bool(cfg.init_checkpoint) and cfg.init_checkpoint.startswith(cfg.checkpoint.uri.rstrip("/") + "/")


def own_checkpoints(cfg: TrainConfig) -> list[checkpoint.StepFolder]:
    """This run's committed checkpoints, newest first; raises ConfigError naming another run's."""
    mine, theirs = [], []
    for folder in reversed([s for s in checkpoint.list_steps(cfg.checkpoint.uri) if s.committed]):
        try:
            why = foreign(checkpoint.read_meta(folder.uri), cfg)
        except (OSError, ValueError):
            why = None  # unreadable metadata: `resume` finds that out and falls back
        (theirs if why else mine).append((folder, why))
    if theirs and not _adopting(cfg):
        named = "; ".join(f"{f.uri}: {why}" for f, why in theirs[:3])
        raise ConfigError(
            f"spec.checkpoint.uri: {cfg.checkpoint.uri} holds checkpoints of another run ({named}); "
            "use another checkpoint.uri, or set init.checkpointUri to one of them to continue from it"
        )
    return [f for f, _ in mine]


def resume(
    cfg: TrainConfig,
    ckpt: checkpoint.Checkpointer,
    model,
    optimizer,
    watch: stopping.ValidationWatch,
    rank: int,
) -> tuple[int, int, checkpoint.StepFolder | None, list[dict]]:
    """Load this run's newest loadable checkpoint (a restart), else the initial weights when
    init.checkpointUri is set, or the replayed run's checkpoint that `replay.plan` picks when
    init.replayFrom is. Returns (step, sequences consumed, the folder resumed from, the
    checkpoints skipped as unreadable: {uri, step, reason})."""
    if rank == 0:
        ckpt.remove_uncommitted()
    dist.barrier()
    skipped = []
    for folder in own_checkpoints(cfg):
        state = state_for(model, optimizer, 0, 0, watch)
        try:
            checkpoint.load_state(folder.uri, state)
        # DCP raises CheckpointException (a BaseException) on every rank for any rank's read error.
        except (CheckpointException, OSError, ValueError, RuntimeError, EOFError) as exc:
            reason = _reason(exc)
            log.error(
                "checkpoint %s is committed but unreadable (%s); trying the one before", folder.uri, reason
            )
            skipped.append({"uri": folder.uri, "step": folder.step, "reason": reason})
            if rank == 0:
                _uncommit(folder, reason)
                metrics.emit({"event": "checkpointUnreadable", **skipped[-1]})
            dist.barrier()
            continue
        step, cursor = _apply(state, model, optimizer, watch)
        ckpt.last_committed = folder
        return step, cursor, folder, skipped
    if cfg.replay_from:
        # Another run's whole state: a failure to load it is this spec's problem, not a retry's.
        info = replay.plan(cfg)
        if rank == 0:
            replay.record(cfg, info)
            metrics.emit({"event": "replay", **info.to_wire()})
        if not info.checkpoint:
            return 0, 0, None, skipped
        state = state_for(model, optimizer, 0, 0, watch)
        checkpoint.load_state(info.checkpoint, state)
        step, cursor = _apply(state, model, optimizer, watch)
        return step, cursor, None, skipped
    load_init(model, cfg, rank)
    return 0, 0, None, skipped


def load_init(model, cfg: TrainConfig, rank: int) -> None:
    """The initial weights (init.huggingFace or the init checkpoint) into `model`; every rank
    calls it, nothing without an init. Only base weights are loaded: this run's own LoRA adapters
    keep their B = 0 start. An init checkpoint of a LoRA run is its merged model (rank 0 merges,
    FSDP2 keeps each rank's slice), so a run on top of it starts where that one ended."""
    if cfg.init_hf:
        hfinit.load_weights(model, cfg.init_hf, cfg.model, rank)
    elif cfg.init_checkpoint and checkpoint.read_meta(cfg.init_checkpoint).get("lora"):
        full = {}
        if rank == 0:
            merged, _ = checkpoint.load_model(cfg.init_checkpoint, dtype=next(model.parameters()).dtype)
            full = merged.state_dict()
        options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, strict=False)
        set_model_state_dict(model, full, options=options)
    elif cfg.init_checkpoint:
        msd = {k: v for k, v in get_model_state_dict(model).items() if not lora.is_adapter(k)}
        checkpoint.load_state(cfg.init_checkpoint, {"model": msd})
        set_model_state_dict(model, msd, options=StateDictOptions(strict=False))


def _apply(state: dict, model, optimizer, watch: stopping.ValidationWatch) -> tuple[int, int]:
    """A loaded checkpoint's whole state into the live objects; returns (step, sequences consumed)."""
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    torch.set_rng_state(state["rng"]["torch"])
    watch.load_json(state["validation"]["watch"])
    return int(state["scheduler"]["step"]), int(state["loader"]["sequences_consumed"])


def _reason(exc: BaseException) -> str:
    """One line: the first failing rank's error (CheckpointException wraps one per rank)."""
    failures = getattr(exc, "failures", None) or {}
    cause = next(iter(failures.values()), exc)
    text = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    return f"{type(cause).__name__}: {text}"[:500]


def _uncommit(folder: checkpoint.StepFolder, reason: str) -> None:
    """No longer a checkpoint to resume from (the next start-up deletes it); the note says why."""
    storage.write_bytes(storage.join(folder.uri, UNREADABLE), json.dumps({"reason": reason}).encode())
    fs, path = storage.filesystem(folder.uri)
    fs.rm(f"{path.rstrip('/')}/{checkpoint.COMMITTED}")
