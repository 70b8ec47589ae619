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
import json
import os
import sys
import time

from capstan_api import exitcodes
from capstan_api.common import InvalidResource
from capstan_api.dataset import DatasetSpec
from capstan_api.resource import load_resource
from capstan_trainer import storage
from capstan_trainer.prepare.mapper import Part, combine, run_map
from capstan_trainer.prepare.merge import merge
from capstan_trainer.prepare.read import InputError, list_files

# The operator narrows the resource's allow-list with its policy through this variable (comma-separated).
POLICY_ENV = "CAPSTAN_ALLOWED_LICENCES"


class MissingPart(Exception):
    """A map shard's part is not written yet: exit 1, so the merge is retried."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m capstan_trainer.prepare", description=__doc__.split("\n")[0])
    ap.add_argument("-f", "--file", required=True, help="the Dataset resource (YAML)")
    ap.add_argument("--shard-index", type=int, help="map shard to run (with --shard-count)")
    ap.add_argument("--shard-count", type=int, help="number of map shards")
    ap.add_argument("--merge", action="store_true", help="merge the map shards' parts (with --shard-count)")
    return ap.parse_args(argv)


def shard_count(args: argparse.Namespace) -> int:
    count = args.shard_count or 1
    if count < 1 or (args.shard_index is not None and not 0 <= args.shard_index < count):
        raise InputError(f"--shard-index {args.shard_index} must be in [0, --shard-count {count})")
    if args.shard_index is not None and args.merge:
        raise InputError("--shard-index and --merge are separate steps")
    return count


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


def read_parts(output: str, count: int) -> Part:
    parts = []
    for i in range(count):
        uri = part_uri(output, i, count)
        if not storage.exists(uri):
            raise MissingPart(f"part {i} of {count} is missing ({uri}); run --shard-index {i}")
        parts.append(Part.from_bytes(storage.read_bytes(uri)))
    return combine(parts)


def remove_parts(output: str) -> None:
    fs, path = storage.filesystem(storage.join(output, "_parts"))
    fs.rm(path, recursive=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        raw, spec = load_resource(args.file, DatasetSpec, "Dataset")
        name = raw.get("metadata", {}).get("name", "dataset")
        count = shard_count(args)
        allowed = allowed_licences(spec)
        files = list_files(spec.sources)
        t0 = time.perf_counter()
        out = spec.output.uri
        if args.shard_index is not None:
            # ---- one map shard: its part, for the merge step
            part = run_map(spec, files, set(allowed), args.shard_index, count)
            uri = part_uri(out, args.shard_index, count)
            storage.write_bytes(uri, part.to_bytes())
            summary = {"part": uri, "documents": len(part.ids), "counts": dict(sorted(part.counts.items()))}
        else:
            # ---- map (or read the shards' parts), then merge
            part = read_parts(out, count) if args.merge else run_map(spec, files, set(allowed))
            stats = merge(spec, part, allowed, name)
            if args.merge:
                remove_parts(out)
            summary = {"manifest": storage.join(out, "manifest.json"), **stats}
        summary["wallSeconds"] = round(time.perf_counter() - t0, 3)
    except (InvalidResource, InputError) as exc:
        print(f"prepare: {exc}", file=sys.stderr)
        return exitcodes.INVALID_CONFIG
    except MissingPart as exc:
        print(f"prepare: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary, sort_keys=True))
    return 0
