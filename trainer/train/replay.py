"""Exact removal by replay: `init.replayFrom` (the operator's form of `init.replayWithout`).

The run replayed trained on an older revision of each dataset; this run trains on the newer one,
whose `excluded.jsonl` lists the documents removed since. The loader's order is a pure function of
(seed, manifests, sequence index) and documents.jsonl gives each document's token range, so the
first step that read any token of a removed document is known exactly:

    removed ids -> token ranges in the old train split -> windows touching them -> the first
    sequence index g in the old order that is such a window -> step g // batch

The replay starts from the replayed run's newest committed checkpoint of a step at or before that
one (its whole state: weights, optimizer, schedule, RNG, cursor), which never saw a removed
token, and trains on the new revision from its cursor on. The steps before that checkpoint are
what the replay saves against training from scratch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from capstan_api.lineage import ReplayInfo
from capstan_trainer import checkpoint, shards, storage
from capstan_trainer.prepare.exclusions import read_excluded
from capstan_trainer.train import loader
from capstan_trainer.train.config import ConfigError, TrainConfig

REPLAY_FILE = "replay.json"
"""REPLAY_FILE: at the replaying run's checkpoint root, the plan its first start chose; later
starts (restarts) resume from the run's own checkpoints and report this."""


def _folder(manifest_uri: str) -> str:
    return manifest_uri.removesuffix("manifest.json").rstrip("/")


def train_ranges(documents_jsonl: str) -> dict[int, tuple[int, int]]:
    """Document id -> [start, end) token range in the train split's concatenation (documents.jsonl
    lists the train documents first, in shard order, each with its token count and end-of-text)."""
    out, pos = {}, 0
    for line in documents_jsonl.splitlines():
        if not line.strip():
            continue
        d = json.loads(line)
        if d["split"] != "train":
            continue
        out[d["id"]] = (pos, pos + d["tokens"])
        pos += d["tokens"]
    return out


def windows_touching(ranges: list[tuple[int, int]], seq_len: int, n_windows: int) -> set[int]:
    """Windows whose inputs or targets hold a token of any range: window w reads tokens
    [w * seqLen, w * seqLen + seqLen + 1)."""
    out: set[int] = set()
    for start, end in ranges:
        first = max(0, -(-(start - seq_len) // seq_len))  # smallest w with w*L + L >= start
        last = min(n_windows - 1, (end - 1) // seq_len)
        out.update(range(first, last + 1))
    return out


def first_exposure(
    order: loader.SequenceOrder, touched: list[set[int]], batch_seqs: int, limit: int
) -> int | None:
    """The first step (0-based) whose batch holds a touched window of its source, among the first
    `limit` steps; None when none does. Walks the order backwards (`index_of`): per touched
    window one index per pass over its source, so the cost is the removed windows times the
    epochs, not the steps trained."""
    end = limit * batch_seqs
    first = None
    for src, windows in enumerate(touched):
        if not windows:
            continue
        # Pass e starts at local index e * n; a global index is never below its local one less
        # a mixture block, so later passes cannot come before `end`.
        epoch = 0
        while epoch * order.windows[src] < end + loader.MIX_BLOCK:
            for w in windows:
                g = order.index_of(src, w, epoch)
                if g < end and (first is None or g < first):
                    first = g
            epoch += 1
    return None if first is None else first // batch_seqs


@dataclass
class OldSource:
    """One source as the replayed run trained on it (from its checkpoint's capstan.json)."""

    uri: str
    weight: float
    fingerprint: str
    windows: int


def plan(cfg: TrainConfig) -> ReplayInfo:
    """The checkpoint to replay from and why; raises ConfigError naming spec.init.replayFrom."""
    field = "spec.init.replayFrom"
    steps = [s for s in checkpoint.list_steps(cfg.replay_from) if s.committed]
    if not steps:
        raise ConfigError(f"{field}: {cfg.replay_from} holds no committed checkpoint")
    meta = checkpoint.read_meta(steps[-1].uri)
    _check_same_training(cfg, meta, field)
    o = cfg.optimizer
    old, touched, removed = [], [], 0
    for i, (entry, new) in enumerate(zip(meta["dataset"], cfg.sources, strict=True)):
        manifest = shards.read_manifest(entry["uri"])
        if manifest.tokenizer.get("sha256") != new.manifest.tokenizer.get("sha256"):
            raise ConfigError(
                f"spec.datasets[{i}]: tokenized with another tokenizer than the replayed run's data "
                f"({entry['uri']}); prepare the new revision with tokenizer.uri set to that one's tokenizer.json"
            )
        n_windows = loader.open_split(entry["uri"], manifest, "train").windows(o.seq_len)
        old.append(OldSource(entry["uri"], entry["weight"], entry["fingerprint"], n_windows))
        gone = {d["id"] for d in read_excluded(new.uri)}
        ranges = train_ranges(
            storage.read_bytes(storage.join(_folder(entry["uri"]), "documents.jsonl")).decode()
        )
        hit = [ranges[d] for d in sorted(gone) if d in ranges]
        removed += len(hit)
        touched.append(windows_touching(hit, o.seq_len, n_windows))
    order = loader.SequenceOrder(
        [s.windows for s in old], [s.weight for s in old], [s.fingerprint for s in old], o.seed
    )
    trained = int(meta.get("order", {}).get("totalSteps") or o.total_steps)
    exposed = first_exposure(order, touched, cfg.batch_seqs, min(trained, o.total_steps))
    limit = o.total_steps if exposed is None else exposed
    # A checkpoint of step s holds steps [0, s): exposure at step k allows s <= k.
    usable = [s for s in steps if s.step <= limit]
    start = usable[-1] if usable else None
    return ReplayInfo(
        replayed=cfg.replay_from,
        checkpoint=start.uri if start else "",
        step=start.step if start else 0,
        first_exposure=exposed,
        removed_documents=removed,
        steps_saved=start.step if start else 0,
    )


def _check_same_training(cfg: TrainConfig, meta: dict, field: str) -> None:
    """What fixes the order and the schedule must be the replayed run's, or the replay is not
    the same training without the documents."""
    o = cfg.optimizer
    if len(meta.get("dataset") or []) != len(cfg.sources):
        raise ConfigError(
            f"spec.datasets: {len(cfg.sources)} source(s), the replayed run ({field}) trained on "
            f"{len(meta.get('dataset') or [])}"
        )
    if meta.get("seqLen") != o.seq_len:
        raise ConfigError(f"spec.optimizer.seqLen: {o.seq_len}, the replayed run's is {meta.get('seqLen')}")
    recorded = meta.get("order") or {}  # checkpoints written before replay existed lack it
    mine = order_meta(cfg)
    for key, name in (("seed", "seed"), ("batchSeqs", "globalBatchTokens"), ("totalSteps", "totalSteps")):
        if key in recorded and recorded[key] != mine[key]:
            raise ConfigError(
                f"spec.optimizer.{name}: differs from the replayed run's ({key} {mine[key]} vs {recorded[key]})"
            )
    weights = [s.weight for s in cfg.sources]
    if [e["weight"] for e in meta["dataset"]] != weights:
        raise ConfigError(f"spec.datasets: weights {weights} differ from the replayed run's")


def order_meta(cfg: TrainConfig) -> dict:
    """What each checkpoint records so a replay can check it trains the same way."""
    o = cfg.optimizer
    return {"seed": o.seed, "batchSeqs": cfg.batch_seqs, "totalSteps": o.total_steps}


def record(cfg: TrainConfig, info: ReplayInfo) -> None:
    """replay.json at this run's root (rank 0): what every later start reports."""
    storage.write_bytes(
        storage.join(cfg.checkpoint.uri, REPLAY_FILE), info.model_dump_json(by_alias=True).encode()
    )


def recorded(cfg: TrainConfig) -> ReplayInfo | None:
    uri = storage.join(cfg.checkpoint.uri, REPLAY_FILE)
    if not cfg.replay_from or not storage.exists(uri):
        return None
    return ReplayInfo.model_validate_json(storage.read_bytes(uri))
