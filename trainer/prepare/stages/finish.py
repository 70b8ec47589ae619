"""finish: the output folder's small files from the stages' markers: documents.jsonl (streamed
from the tokenize parts in document-id order), tokenizer files, datasheet, and manifest.json last
(readers wait for it). Then the bulky intermediate files go; markers and progress stay."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

from capstan_api import preparation
from capstan_api.dataset import DatasetSpec
from capstan_trainer import shards, storage
from capstan_trainer.prepare import datasheet, exclusions
from capstan_trainer.prepare.content import manifest_content
from capstan_trainer.prepare.stages import cluster, shard, tokenize
from capstan_trainer.prepare.stats import manifest_stats
from capstan_trainer.prepare.tokenize_layout import layout
from capstan_trainer.prepare.tokens import tokenizer_config
from capstan_trainer.prepare.work import Context, Progress, markers, write_marker

KEEP = ("done-", "progress-")  # what stays under _work/ once the output is written


def run(ctx: Context) -> dict:
    done = preparation.marker_uri(ctx.out, "finish", 0)
    if storage.exists(done):  # a retry after the manifest was written: only the clean-up is left
        clean(ctx)
        return json.loads(storage.read_bytes(done))
    maps, (clus,), parts = markers(ctx, "map"), markers(ctx, "cluster"), markers(ctx, "tokenize")
    shard_markers = markers(ctx, "shard")
    spec, out = ctx.spec, ctx.out
    with Progress(ctx) as progress:
        counts = sum((Counter(m["counts"]) for m in maps), Counter())
        files: dict[str, str] = {}
        for m in maps:
            files.update(m["files"])
        splits = split_infos(shard_markers, parts)
        pii = sum((Counter(p["pii"]) for p in parts), Counter())
        licences = sum((Counter(p["licences"]) for p in parts), Counter())
        augmentation = sum((Counter(p.get("augmentation") or {}) for p in parts), Counter())
        _, labels = exclusions.load_rules(spec)
        copies = clus.get("copiesOfRemoved") or []
        stats = manifest_stats(
            counts,
            clus["documents"],
            clus["exact"],
            clus["near"],
            pii,
            licences,
            splits,
            augmentation=augmentation,
            exclusion_labels=labels,
            copies=len(copies),
        )
        stats |= manifest_content(spec, parts)
        write_excluded(ctx, maps, labels, copies)
        tok, dtype, eos = tokenize.load_tokenizer(ctx)
        tok_json = storage.read_bytes(ctx.path("cluster", cluster.TOKENIZER_FILE))
        sha = hashlib.sha256(tok_json).hexdigest()
        fp = fingerprint(spec, list(ctx.allowed), files, sha)
        storage.write_bytes(storage.join(out, "tokenizer.json"), tok_json)
        storage.write_bytes(
            storage.join(out, "tokenizer_config.json"), tokenizer_config(tok, spec.tokenizer).encode()
        )
        progress.documents_out = write_documents(ctx, parts)
        sheet = datasheet.render(ctx.name, spec, stats, list(ctx.allowed), fp)
        storage.write_bytes(storage.join(out, "datasheet.md"), sheet.encode())
        manifest = shards.Manifest(
            dtype=dtype,
            vocab_size=tok.get_vocab_size(with_added_tokens=True),
            eos_id=eos,
            tokenizer={"path": "tokenizer.json", "sha256": sha, "config": "tokenizer_config.json"},
            splits=splits,
            fingerprint=fp,
            stats=stats,
            loss_mask="pairs" if spec.preference else spec.train_on if spec.loss_mask else "",
        )
        storage.write_bytes(storage.join(out, "manifest.json"), manifest.to_json().encode())
    write_marker(ctx, stats)
    clean(ctx)
    return stats


def split_infos(shard_markers: list[dict], parts: list[dict]) -> dict[str, shards.SplitInfo]:
    found = sorted(tuple(row) for m in shard_markers for row in m["shards"])
    return {
        split: shards.SplitInfo(
            shards=[
                shards.ShardInfo(
                    path=shard.shard_name(s, k),
                    tokens=n,
                    sha256=sha,
                    mask=shard.mask_shard_name(s, k) if mask_sha else "",
                    mask_sha256=mask_sha[0] if mask_sha else "",
                )
                for s, k, n, sha, *mask_sha in found
                if s == split
            ],
            documents=sum(p["splits"][split]["documents"] for p in parts),
            loss_tokens=sum(p["splits"][split].get("lossTokens", 0) for p in parts),
        )
        for split in tokenize.SPLITS
    }


COPY_RULE = "copy of a removed document"


def write_excluded(ctx: Context, maps: list[dict], labels: list[str], copies: list[int]) -> None:
    """excluded.jsonl: every removed document (id order) and the rule that removed it, copies of
    them that dedup dropped included (an older revision may have kept one); written only when
    there are rules, so its absence means "nothing was asked to be removed"."""
    if not labels:
        return
    rows = [(i, url, labels[r]) for m in maps for i, url, r in m.get("excluded") or []]
    rows = sorted(rows + [(i, "", COPY_RULE) for i in copies])
    body = "".join(
        json.dumps({"id": i, "url": url, "rule": rule}, sort_keys=True) + "\n" for i, url, rule in rows
    )
    storage.write_bytes(storage.join(ctx.out, exclusions.EXCLUDED_FILE), body.encode())


def write_documents(ctx: Context, parts: list[dict]) -> int:
    """documents.jsonl: where every output document came from, in output order (train, then
    validation; id order within each)."""
    n = 0
    with storage.open_write(storage.join(ctx.out, "documents.jsonl")) as f:
        for split in tokenize.SPLITS:
            for s in layout(parts, split):
                uri = ctx.path("tokenize", tokenize.meta_name(s.part, split))
                f.write(storage.read_range(uri, s.meta_offset, s.meta_bytes))
                n += s.documents
    return n


def fingerprint(spec: DatasetSpec, allowed: list[str], files: dict[str, str], tokenizer_sha: str) -> str:
    """Hash of the inputs' bytes and everything in the spec that shapes the output (not its
    location, nor how many workers made it or with what resources)."""
    wire = spec.to_wire()
    for key in ("output", "workers", "resources"):
        wire.pop(key, None)
    wire["output"] = {k: v for k, v in spec.output.to_wire().items() if k != "uri"}
    body = {"spec": wire, "allowed": allowed, "files": sorted(files.items()), "tokenizer": tokenizer_sha}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def clean(ctx: Context) -> None:
    fs, path = storage.filesystem(storage.join(ctx.out, preparation.WORK_DIR))
    for f in fs.find(path):
        if not f.rsplit("/", 1)[-1].startswith(KEEP):
            fs.rm_file(f)
