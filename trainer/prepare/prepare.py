"""Dataset preparation: `python -m capstan_trainer.prepare -f dataset.yaml`.

    read -> licence -> normalise -> filter -> exact dedup -> near dedup -> PII -> tokenize -> shards

One process does it all by default. For large inputs an Indexed Job runs
`--shard-index I --shard-count N` per pod (the per-document stages over every N-th file, written
to <output>/_parts/) and then one `--merge --shard-count N` (global dedup, split, tokenizer,
shards, manifest). Both ways give byte-identical output. Prints a JSON summary; exit code 3 on
bad input (the message names the field, source or file), 1 on other failures (retryable).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections import Counter

import numpy as np

from capstan_api import exitcodes
from capstan_api.common import InvalidResource
from capstan_api.dataset import DatasetSpec
from capstan_api.resource import load_resource
from capstan_trainer import shards, storage
from capstan_trainer.prepare import datasheet, dedup
from capstan_trainer.prepare.mapper import Part, combine, run_map
from capstan_trainer.prepare.read import InputError, list_files
from capstan_trainer.prepare.tokens import (
    ShardWriter,
    load_tokenizer,
    token_stream,
    tokenizer_config,
    train_tokenizer,
)

# The operator narrows the resource's allow-list with its policy through this variable (comma-separated).
POLICY_ENV = "CAPSTAN_ALLOWED_LICENCES"


def allowed_licences(spec: DatasetSpec) -> list[str]:
    allowed = list(dict.fromkeys(spec.allowed_licences))
    policy = os.environ.get(POLICY_ENV, "").strip()
    if policy:
        narrow = {x.strip() for x in policy.split(",") if x.strip()}
        allowed = [x for x in allowed if x in narrow]
    if not allowed:
        raise InputError(f"spec.allowedLicences: no licence is allowed by the operator's policy ({policy})")
    return allowed


def part_uri(output: str, index: int, count: int) -> str:
    return storage.join(output, "_parts", f"part-{index:05d}-of-{count:05d}.npz")


def fingerprint(spec: DatasetSpec, allowed: list[str], files: dict[str, str], tokenizer_sha: str) -> str:
    """Hash of the inputs' bytes and everything in the spec that shapes the output (not its location)."""
    wire = spec.to_wire()
    wire.pop("output", None)
    wire["output"] = {k: v for k, v in spec.output.to_wire().items() if k != "uri"}
    body = {"spec": wire, "allowed": allowed, "files": sorted(files.items()), "tokenizer": tokenizer_sha}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def merge(spec: DatasetSpec, part: Part, allowed: list[str], name: str) -> dict:
    """Global stages over all documents; writes the output folder and returns the manifest stats."""
    clock, seconds = time.perf_counter, Counter(part.seconds)
    c = part.counts
    # ---- malformed records cap
    if c["records"] and c["malformed"] / c["records"] > spec.max_error_rate:
        worst = max(part.malformed_by_file.items(), key=lambda kv: kv[1])
        raise InputError(
            f"spec.maxErrorRate: {c['malformed']} of {c['records']} records are malformed "
            f"({c['malformed'] / c['records']:.4%} > {spec.max_error_rate:.4%}); most in {worst[0]} ({worst[1]})"
        )
    n = len(part.ids)
    # ---- exact dedup: keep the first (lowest id) of each normalised text
    t0 = clock()
    keep = np.ones(n, dtype=bool)
    if spec.dedup.exact:
        seen: set[bytes] = set()
        for i, d in enumerate(part.digests):
            if d in seen:
                keep[i] = False
            seen.add(d)
    exact_removed = int(n - keep.sum())
    # ---- near dedup over the exact survivors
    t1 = clock()
    near_removed = 0
    if spec.dedup.near.enabled and part.bands is not None:
        survivors = np.flatnonzero(keep)
        sigs = part.sigs[survivors] if part.sigs is not None else None
        drop = dedup.near_duplicates(part.bands[survivors], sigs, spec.dedup.near.threshold)
        keep[survivors[drop]] = False
        near_removed = len(drop)
    t2 = clock()
    seconds["exactDedup"] += t1 - t0
    seconds["nearDedup"] += t2 - t1
    kept = np.flatnonzero(keep).tolist()
    if not kept:
        raise InputError("spec.sources: no documents left after licence, filters and deduplication")
    frac = spec.output.validation_fraction
    split = {i: "validation" if dedup.split_draw(part.digests[i]) < frac else "train" for i in kept}
    train_idx = [i for i in kept if split[i] == "train"]
    val_idx = [i for i in kept if split[i] == "validation"]
    if not train_idx:
        raise InputError(
            "spec.output.validationFraction: every remaining document fell in the validation split"
        )
    # ---- tokenizer
    out = spec.output.uri
    if spec.tokenizer.uri:
        tok = load_tokenizer(spec.tokenizer.uri, spec.tokenizer)
    else:
        tok = train_tokenizer(_sample(part, train_idx, spec.tokenizer.sample_bytes), spec.tokenizer)
    tok_json = tok.to_str().encode("utf-8")
    tok_sha = hashlib.sha256(tok_json).hexdigest()
    vocab = tok.get_vocab_size(with_added_tokens=True)
    dtype, eos = shards.dtype_for_vocab(vocab), tok.token_to_id(spec.tokenizer.special_tokens.eos)
    t3 = clock()
    seconds["tokenizerTrain"] += t3 - t2
    # ---- tokenize and write shards
    splits: dict[str, shards.SplitInfo] = {}
    tokens_of: dict[int, int] = {}
    for name_, idx in (("train", train_idx), ("validation", val_idx)):
        writer = ShardWriter(out, name_, spec.output.shard_tokens, dtype)
        pos = 0
        for flat, lengths in token_stream(tok, [part.texts[i] for i in idx], eos, dtype):
            writer.add(flat)
            tokens_of.update(zip(idx[pos : pos + len(lengths)], lengths, strict=True))
            pos += len(lengths)
        splits[name_] = shards.SplitInfo(shards=writer.close(), documents=len(idx))
    seconds["tokenize"] += clock() - t3
    # ---- statistics, datasheet, manifest (last: readers wait for it)
    pii: Counter = Counter()
    for i in kept:
        pii.update(part.pii[i])
    stats = _stats(
        c, n, exact_removed, near_removed, len(kept), splits, pii, [part.licences[i] for i in kept]
    )
    fp = fingerprint(spec, allowed, part.files, tok_sha)
    storage.write_bytes(storage.join(out, "tokenizer.json"), tok_json)
    storage.write_bytes(
        storage.join(out, "tokenizer_config.json"), tokenizer_config(tok, spec.tokenizer).encode()
    )
    storage.write_bytes(storage.join(out, "documents.jsonl"), _documents(part, spec, kept, split, tokens_of))
    storage.write_bytes(
        storage.join(out, "datasheet.md"), datasheet.render(name, spec, stats, allowed, fp).encode()
    )
    manifest = shards.Manifest(
        dtype=dtype,
        vocab_size=vocab,
        eos_id=eos,
        tokenizer={"path": "tokenizer.json", "sha256": tok_sha, "config": "tokenizer_config.json"},
        splits=splits,
        fingerprint=fp,
        stats=stats,
    )
    storage.write_bytes(storage.join(out, "manifest.json"), manifest.to_json().encode())
    stats["seconds"] = {k: round(v, 3) for k, v in seconds.items()}
    return stats


def _sample(part: Part, idx: list[int], limit: int):
    """Training-split texts in id order up to `limit` bytes: deterministic tokenizer input."""
    used = 0
    for i in idx:
        if used >= limit:
            return
        used += len(part.texts[i])
        yield part.texts[i]


def _stats(
    c: Counter, n: int, exact: int, near: int, kept: int, splits, pii: Counter, licences: list[str]
) -> dict:
    records, parsed = c["records"], c["records"] - c["malformed"]
    excluded = {k.split(":", 1)[1]: v for k, v in c.items() if k.startswith("licence:") and v}
    after_licence = parsed - sum(excluded.values())
    by_rule = {k.split(":", 1)[1]: v for k, v in c.items() if k.startswith("rule:") and v}
    by_filter: Counter = Counter()
    for rule, v in by_rule.items():
        by_filter[rule.split(".", 1)[0]] += v
    return {
        "files": c["files"],
        "bytes": c["bytes"],
        "records": records,
        "malformed": c["malformed"],
        "normalised": c["normalised"],
        "licence": {"excludedByLicence": excluded, "keptByLicence": dict(sorted(Counter(licences).items()))},
        "filters": {"removed": after_licence - n, "byFilter": dict(by_filter), "byRule": by_rule},
        "exactDuplicates": exact,
        "nearDuplicates": near,
        "pii": dict(sorted(pii.items())),
        "stages": [
            {"stage": "read", "in": records, "out": parsed},
            {"stage": "licence", "in": parsed, "out": after_licence},
            {"stage": "filters", "in": after_licence, "out": n},
            {"stage": "exactDedup", "in": n, "out": n - exact},
            {"stage": "nearDedup", "in": n - exact, "out": kept},
        ],
        "documents": {"train": splits["train"].documents, "validation": splits["validation"].documents},
        "tokens": {name: sp.tokens for name, sp in splits.items()},
        "shards": sum(len(sp.shards) for sp in splits.values()),
    }


def _documents(part: Part, spec: DatasetSpec, kept: list[int], split: dict, tokens_of: dict) -> bytes:
    """documents.jsonl: where every output document came from, in output order."""
    lines = []
    for name in ("train", "validation"):
        for i in kept:
            if split[i] != name:
                continue
            file_index, record = part.ids[i] >> 32, part.ids[i] & 0xFFFFFFFF
            lines.append(
                json.dumps(
                    {
                        "split": name,
                        "id": part.ids[i],
                        "file": file_index,
                        "record": record,
                        "licence": part.licences[i],
                        "url": part.urls[i],
                        "tokens": tokens_of[i],
                    },
                    sort_keys=True,
                )
            )
    return ("\n".join(lines) + "\n").encode()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m capstan_trainer.prepare", description=__doc__.split("\n")[0])
    ap.add_argument("-f", "--file", required=True, help="the Dataset resource (YAML)")
    ap.add_argument("--shard-index", type=int, help="map shard to run (with --shard-count)")
    ap.add_argument("--shard-count", type=int, help="number of map shards")
    ap.add_argument("--merge", action="store_true", help="merge the map shards' parts (with --shard-count)")
    args = ap.parse_args(argv)
    try:
        raw, spec = load_resource(args.file, DatasetSpec, "Dataset")
        name = raw.get("metadata", {}).get("name", "dataset")
        count = args.shard_count or 1
        if count < 1 or (args.shard_index is not None and not 0 <= args.shard_index < count):
            raise InputError(f"--shard-index {args.shard_index} must be in [0, --shard-count {count})")
        if args.shard_index is not None and args.merge:
            raise InputError("--shard-index and --merge are separate steps")
        allowed = allowed_licences(spec)
        files = list_files(spec.sources)
        t0 = time.perf_counter()
        if args.shard_index is not None:
            part = run_map(spec, files, set(allowed), args.shard_index, count)
            uri = part_uri(spec.output.uri, args.shard_index, count)
            storage.write_bytes(uri, part.to_bytes())
            summary = {"part": uri, "documents": len(part.ids), "counts": dict(sorted(part.counts.items()))}
        else:
            if args.merge:
                parts = []
                for i in range(count):
                    uri = part_uri(spec.output.uri, i, count)
                    if not storage.exists(uri):
                        print(
                            f"prepare: part {i} of {count} is missing ({uri}); run --shard-index {i}",
                            file=sys.stderr,
                        )
                        return 1
                    parts.append(Part.from_bytes(storage.read_bytes(uri)))
                part = combine(parts)
            else:
                part = run_map(spec, files, set(allowed))
            stats = merge(spec, part, allowed, name)
            if args.merge:
                fs, path = storage.filesystem(storage.join(spec.output.uri, "_parts"))
                fs.rm(path, recursive=True)
            summary = {"manifest": storage.join(spec.output.uri, "manifest.json"), **stats}
        summary["wallSeconds"] = round(time.perf_counter() - t0, 3)
    except (InvalidResource, InputError) as exc:
        print(f"prepare: {exc}", file=sys.stderr)
        return exitcodes.INVALID_CONFIG
    print(json.dumps(summary, sort_keys=True))
    return 0
