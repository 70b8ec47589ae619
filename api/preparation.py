"""The contract of staged Dataset preparation between the operator and the prepare workers.

Preparation runs as stages, each a Kubernetes Indexed Job (or, on one machine, a pool of
processes) that the operator starts when the previous one completed:

    map       N workers   per-file work: read, licence, normalise, filters, PII, dedup keys;
                          kept documents written as parts, MinHash band keys as sorted runs
    dedup     <= N        per LSH band (and one exact-digest task): sorted merge of the runs,
                          duplicate pairs out
    cluster   1           union-find over the duplicate pairs only; the tokenizer's sample
    tokenize  N           per part: drop duplicates, split, tokenize, token streams out
    shard     N           cut the streams into equal shard files, in document-id order
    finish    1           manifest, datasheet, documents.jsonl

Every intermediate file lives under `<output>/_work/<stage>/`; a worker writes its files whole,
then its commit marker (`done-<index>.json`), so a retried index or a re-run stage is idempotent.
Workers write `progress-<index>.json` at least every 10 s; the operator reads it into status.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from capstan_api.dataset import DatasetSpec
from capstan_api.files import FileModel, join

WORK_DIR = "_work"
StageName = Literal["map", "dedup", "cluster", "tokenize", "shard", "finish"]
STAGES: tuple[StageName, ...] = ("map", "dedup", "cluster", "tokenize", "shard", "finish")
PROGRESS_SECONDS = 10.0
"""PROGRESS_SECONDS: a worker logs a progress line and rewrites its progress file this often."""


@dataclass(frozen=True)
class Stage:
    name: StageName
    workers: int
    """workers: Job completions (= parallelism): one pod per index."""


def dedup_tasks(spec: DatasetSpec) -> int:
    """LSH bands (when near dedup is on) plus one exact-digest task (when exact dedup is on)."""
    return (spec.dedup.near.bands if spec.dedup.near.enabled else 0) + (1 if spec.dedup.exact else 0)


def plan(spec: DatasetSpec) -> list[Stage]:
    """The stages of `spec` in order, with their worker counts (a function of the spec only)."""
    n = spec.workers
    return [
        Stage("map", n),
        Stage("dedup", max(1, min(n, dedup_tasks(spec)))),
        Stage("cluster", 1),
        Stage("tokenize", n),
        Stage("shard", n),
        Stage("finish", 1),
    ]


def stage_dir(output_uri: str, stage: str) -> str:
    return join(output_uri, WORK_DIR, stage)


def progress_uri(output_uri: str, stage: str, index: int) -> str:
    return join(stage_dir(output_uri, stage), f"progress-{index:05d}.json")


def marker_uri(output_uri: str, stage: str, index: int) -> str:
    return join(stage_dir(output_uri, stage), f"done-{index:05d}.json")


class StageProgress(FileModel):
    """progress-<index>.json: how far one worker of one stage is."""

    stage: str
    index: int
    workers: int
    documents_in: int = 0
    """documents_in: documents this worker has read so far (records for map)."""
    documents_out: int = 0
    """documents_out: documents it has kept or written so far."""
    bytes_in: int = 0
    """bytes_in: input bytes read so far (compressed, as stored)."""
    done: bool = False
    """done: the worker committed its output (its marker is written)."""
    time: str | None = None
    """time: UTC time of this write (RFC 3339)."""
