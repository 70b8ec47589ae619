"""Checkpoints on object storage: one DCP folder per step, a commit marker written last.

Layout under a run's checkpoint root (any fsspec URI: s3://, file://, or a plain path):
  step-00000010/
    .metadata, __0_0.distcp ...   torch.distributed.checkpoint of {"model", "optimizer",
                                  "scheduler", "loader", "rng"}
    capstan.json                  {"step", "model": ModelConfig as dict, "tokenizer", "dataset", ...}
    tokenizer.json                copied from the dataset, so the folder is self-contained
    COMMITTED                     written last; readers ignore folders without it
    hf/                           the Hugging Face export, once a Deployment asked for one
                                  (capstan_trainer.export; hf/EXPORTED written last)
  progress.json                   written by train.py for the operator

Saving is asynchronous (DCP stages the state to CPU memory, then writes from a thread on its own
gloo process group so it never interleaves with training collectives); rank 0 commits once its
future resolves, which DCP only lets happen after every rank's data and the global metadata exist.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from concurrent.futures import Future
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.fsspec_filesystem import FsspecReader, FsspecWriter

from capstan_api import files
from capstan_api.lora import LoraSpec
from capstan_trainer import lora, storage
from capstan_trainer.model import ModelConfig, Transformer

log = logging.getLogger("capstan.checkpoint")

COMMITTED = files.COMMIT_MARKER
META = "capstan.json"
_STEP_RE = files.STEP_FOLDER_RE


step_uri = files.step_folder  # the layout is the API's: the operator resolves an Evaluation's model.step


def _reader(uri: str) -> FsspecReader:
    # DCP reads a file's tensors in plan order, not by offset, and torch.load reads each in small
    # pieces: s3fs's default read-ahead cache refetches, a block cache (at most 32 x 16 MiB per
    # open file) does not. 352 MiB from SeaweedFS: 6.5 s before, 1.0 s with it.
    cache = {"default_cache_type": "blockcache", "default_block_size": 16 * 2**20}
    return FsspecReader(
        uri, **storage.storage_options(uri), **(cache if uri.startswith(("s3://", "s3a://")) else {})
    )


def _writer(uri: str) -> FsspecWriter:
    # sync_files=False: fsync is meaningless on object storage and the COMMITTED marker is what
    # makes a checkpoint count; two threads overlap uploads of several files.
    return FsspecWriter(uri, sync_files=False, thread_count=2, **storage.storage_options(uri))


@dataclass(frozen=True)
class StepFolder:
    step: int
    uri: str
    committed: bool


def list_steps(root: str) -> list[StepFolder]:
    """Every step folder under `root`, oldest first, with whether it is committed."""
    fs, path = storage.filesystem(root)
    if not fs.exists(path):
        return []
    fs.invalidate_cache(path)
    entries = fs.ls(path, detail=False)
    steps = []
    for entry in entries:
        name = entry.rstrip("/").rsplit("/", 1)[-1]
        m = _STEP_RE.match(name)
        if not m:
            continue
        folder = f"{path.rstrip('/')}/{name}"
        committed = fs.exists(f"{folder}/{COMMITTED}")
        # A folder with no object left is no step: stores that keep folders (SeaweedFS) go on
        # listing an emptied one; its filer removes empty folders lazily, and not always.
        if committed or any(e["type"] == "file" for e in fs.find(folder, detail=True).values()):
            steps.append(StepFolder(int(m.group(1)), storage.join(root, name), committed))
    return sorted(steps, key=lambda s: s.step)


def latest_committed(root: str) -> StepFolder | None:
    committed = [s for s in list_steps(root) if s.committed]
    return committed[-1] if committed else None


def resolve(uri: str) -> StepFolder:
    """A committed step folder from either a step folder URI or a checkpoint root (newest step)."""
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    m = _STEP_RE.match(name)
    if m:
        if not storage.exists(storage.join(uri, COMMITTED)):
            raise FileNotFoundError(f"{uri}: checkpoint is not committed (no {COMMITTED} marker)")
        return StepFolder(int(m.group(1)), uri.rstrip("/"), True)
    found = latest_committed(uri)
    if found is None:
        raise FileNotFoundError(f"{uri}: no committed checkpoint (step-XXXXXXXX/{COMMITTED}) found")
    return found


def read_meta(step_folder_uri: str) -> dict:
    return json.loads(storage.read_bytes(storage.join(step_folder_uri, META)))


def model_config_from_meta(meta: dict) -> ModelConfig:
    return ModelConfig(**meta["model"])


def load_model(checkpoint_uri: str, device="cpu", dtype=torch.float32) -> tuple[Transformer, dict]:
    """Load a trained model in this process, without a process group.

    `checkpoint_uri` is a step folder or a checkpoint root (the newest committed step is used).
    Returns (model in eval mode on `device` as `dtype`, the folder's capstan.json contents, with
    "uri" added: the step folder used). A LoRA run's adapters (capstan.json "lora") are merged
    into the base weights: the model returned is a plain decoder, whatever trained it.
    """
    folder = resolve(checkpoint_uri)
    meta = read_meta(folder.uri)
    model = saved_model(folder.uri, meta)
    lora.merge_lora(model)  # in fp32, before any cast
    model.to(device=device, dtype=dtype)
    model.init_rope(torch.device(device))
    model.eval()
    return model, {**meta, "uri": folder.uri}


def saved_model(folder_uri: str, meta: dict | None = None) -> Transformer:
    """The model as a step folder saved it, on CPU in fp32: LoRA adapters (capstan.json "lora")
    present and unmerged."""
    meta = meta or read_meta(folder_uri)
    with torch.device("meta"):
        model = Transformer(model_config_from_meta(meta))
    if meta.get("lora"):
        lora.apply_lora(model, LoraSpec.model_validate(meta["lora"]))
    model.to_empty(device="cpu")
    model.tie_weights()
    # Only the "model" entries are requested, so optimizer state is never read.
    state = {"model": model.state_dict()}
    with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
        warnings.simplefilter("ignore", UserWarning)
        dcp.load(state, storage_reader=_reader(folder_uri), no_dist=True)
    model.load_state_dict(state["model"])
    return model


def load_state(folder_uri: str, state: dict, process_group=None) -> None:
    """Load `state` in place (every rank calls it); DCP reshards to the current world size."""
    dcp.load(state, storage_reader=_reader(folder_uri), process_group=process_group)


class Checkpointer:
    """Asynchronous saves with commit markers and keep-last cleanup. Every rank calls save/wait."""

    def __init__(self, root: str, keep_last: int, rank: int, process_group=None):
        self.root = root
        self.keep_last = keep_last
        self.rank = rank
        self.pg = process_group
        self._pending: tuple[int, Future, dict, bytes | None, float] | None = None
        self.last_committed: StepFolder | None = None
        self.timings: list[dict] = []  # per save: blocking and total seconds (bench and logs)

    def remove_uncommitted(self) -> list[int]:
        """Delete half-written step folders (rank 0, at start-up: nobody else writes to this root)."""
        removed = []
        for s in list_steps(self.root):
            if not s.committed:
                fs, path = storage.filesystem(s.uri)
                log.warning("removing half-written checkpoint %s (no %s marker)", s.uri, COMMITTED)
                fs.rm(path, recursive=True)
                removed.append(s.step)
        return removed

    def save(self, step: int, state: dict, meta: dict, tokenizer: bytes | None) -> float:
        """Start saving `state` for `step`; returns the seconds this call blocked training."""
        self.wait()  # at most one save in flight
        t0 = time.perf_counter()
        uri = step_uri(self.root, step)
        if self.rank == 0 and storage.exists(storage.join(uri, COMMITTED)):
            # A folder of the same step from before (another run's, continued via init, or one
            # found unreadable): un-commit it first, so a crash mid-save cannot leave it "committed".
            fs, path = storage.filesystem(uri)
            fs.rm(f"{path.rstrip('/')}/{COMMITTED}")
            # Its export is of the old weights: drop it (marker first) so it is made again.
            storage.remove(storage.join(files.export_uri(uri), files.EXPORT_MARKER))
            storage.remove(files.export_uri(uri))
        fut = dcp.async_save(
            state, storage_writer=_writer(uri), process_group=self.pg, no_dist=not dist.is_initialized()
        )
        blocked = time.perf_counter() - t0
        self._pending = (step, fut, meta, tokenizer, t0)
        self.timings.append({"step": step, "blockingSeconds": blocked})
        return blocked

    def poll(self) -> StepFolder | None:
        """Commit a finished save without blocking; returns the committed folder if it did."""
        if self._pending is not None and self._pending[1].done():
            return self._finish()
        return None

    def wait(self) -> StepFolder | None:
        if self._pending is None:
            return None
        self._pending[1].result()
        return self._finish()

    def _finish(self) -> StepFolder:
        step, fut, meta, tokenizer, t0 = self._pending
        self._pending = None
        fut.result()  # re-raises a failed upload
        uri = step_uri(self.root, step)
        if self.rank == 0:
            if tokenizer is not None:
                storage.write_bytes(storage.join(uri, "tokenizer.json"), tokenizer)
            storage.write_bytes(
                storage.join(uri, META), json.dumps({**meta, "step": step}, indent=2).encode()
            )
            storage.write_bytes(storage.join(uri, COMMITTED), f"{step}\n".encode())
            self._cleanup()
        self.timings[-1]["totalSeconds"] = time.perf_counter() - t0
        self.last_committed = StepFolder(step, uri, True)
        return self.last_committed

    def _cleanup(self) -> None:
        committed = [s for s in list_steps(self.root) if s.committed]
        for s in committed[: max(0, len(committed) - self.keep_last)]:
            fs, path = storage.filesystem(s.uri)
            # Marker first: a folder interrupted mid-delete must never look committed.
            fs.rm(f"{path.rstrip('/')}/{COMMITTED}")
            fs.rm(path, recursive=True)


def new_checkpoint_group():
    """A separate gloo group for background checkpoint collectives (None when not distributed)."""
    if not dist.is_initialized():
        return None
    return dist.new_group(backend="gloo")
