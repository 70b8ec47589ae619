"""What every stage worker shares: its context, the files under `<output>/_work/`, commit markers
and the progress reporter (a log line and progress-<index>.json every PROGRESS_SECONDS)."""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass, field

from capstan_api import preparation
from capstan_api.common import now_rfc3339
from capstan_api.dataset import DatasetSpec
from capstan_trainer import storage
from capstan_trainer.prepare.read import InputError


class MissingInput(Exception):
    """A previous stage's output is not committed yet: exit 1, so the index is retried."""


@dataclass(frozen=True)
class Context:
    spec: DatasetSpec
    name: str
    """name: the Dataset's metadata.name (for the datasheet)."""
    allowed: tuple[str, ...]
    """allowed: the licences that may enter, the spec's narrowed by the operator's policy."""
    stage: str
    index: int
    workers: int
    """workers: this stage's worker count (the plan's, not always spec.workers)."""

    @property
    def out(self) -> str:
        return self.spec.output.uri

    def path(self, stage: str, name: str) -> str:
        """A file of `stage` under <output>/_work/<stage>/."""
        return storage.join(preparation.stage_dir(self.out, stage), name)

    def workers_of(self, stage: str) -> int:
        return next(s.workers for s in preparation.plan(self.spec) if s.name == stage)


def write_marker(ctx: Context, body: dict) -> None:
    """The commit: written last, after every file the marker vouches for."""
    uri = preparation.marker_uri(ctx.out, ctx.stage, ctx.index)
    storage.write_bytes(uri, json.dumps(body, sort_keys=True).encode())


def markers(ctx: Context, stage: str) -> list[dict]:
    """Every committed marker of an earlier `stage`, in index order."""
    out = []
    for i in range(ctx.workers_of(stage)):
        uri = preparation.marker_uri(ctx.out, stage, i)
        try:
            out.append(json.loads(storage.read_bytes(uri)))
        except FileNotFoundError as exc:
            raise MissingInput(f"stage {stage} index {i} has not committed ({uri})") from exc
    return out


@dataclass
class Progress:
    """Counters a stage advances; a thread logs and writes them every PROGRESS_SECONDS, so a
    long step (tokenizer training) still shows the worker is alive."""

    ctx: Context
    documents_in: int = 0
    documents_out: int = 0
    bytes_in: int = 0
    started: float = field(default_factory=time.monotonic)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Progress:
        self._write(False)
        self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        if exc_type is None:
            self._log()
            self._write(True)

    def _loop(self) -> None:
        while not self._stop.wait(preparation.PROGRESS_SECONDS):
            self._log()
            try:
                self._write(False)
            except OSError as exc:  # progress is advisory: a storage hiccup must not stop the work
                print(f"prepare: progress not written: {exc}", file=sys.stderr, flush=True)

    def _log(self) -> None:
        c, dt = self.ctx, max(time.monotonic() - self.started, 1e-9)
        print(
            f"prepare {c.stage}[{c.index}/{c.workers}]: {self.documents_in} documents in, "
            f"{self.documents_out} out, {self.bytes_in / 1e6:.1f} MB read, {self.bytes_in / 1e6 / dt:.2f} MB/s, "
            f"{dt:.0f} s",
            file=sys.stderr,
            flush=True,
        )

    def _write(self, done: bool) -> None:
        c = self.ctx
        p = preparation.StageProgress(
            stage=c.stage,
            index=c.index,
            workers=c.workers,
            documents_in=self.documents_in,
            documents_out=self.documents_out,
            bytes_in=self.bytes_in,
            done=done,
            time=now_rfc3339(),
        )
        storage.write_bytes(preparation.progress_uri(c.out, c.stage, c.index), p.to_json().encode())


__all__ = ["Context", "InputError", "MissingInput", "Progress", "markers", "write_marker"]
