"""Dataset preparation: `python -m capstan_trainer.prepare -f dataset.yaml [--workers N]`.

Runs the stages of `capstan_api.preparation` (map, dedup, cluster, tokenize, shard, finish) in
order, each over N processes on this machine. In a cluster each stage is an Indexed Job whose
pods run `--stage S --workers N` (the index from JOB_COMPLETION_INDEX, or --index). Any worker
count gives byte-identical output. Prints a JSON summary; exit code 3 on bad input (the message
names the field, source or file), 1 on other failures (retryable).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

from capstan_api import exitcodes, preparation
from capstan_api.common import InvalidResource
from capstan_api.dataset import DatasetSpec
from capstan_api.resource import load_resource
from capstan_trainer.prepare.read import InputError
from capstan_trainer.prepare.stages import cluster, dedup, finish, mapper, shard, tokenize
from capstan_trainer.prepare.work import Context, MissingInput

# The operator narrows the resource's allow-list with its policy through this variable (comma-separated).
POLICY_ENV = "CAPSTAN_ALLOWED_LICENCES"
INDEX_ENV = "JOB_COMPLETION_INDEX"  # set by Kubernetes in an Indexed Job's pods
RUNNERS = {
    "map": mapper.run,
    "dedup": dedup.run,
    "cluster": cluster.run,
    "tokenize": tokenize.run,
    "shard": shard.run,
    "finish": finish.run,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m capstan_trainer.prepare", description=__doc__.split("\n")[0])
    ap.add_argument("-f", "--file", required=True, help="the Dataset resource (YAML)")
    ap.add_argument("--workers", type=int, help="workers per parallel stage (default: spec.workers)")
    ap.add_argument("--stage", choices=preparation.STAGES, help="run one index of this stage only")
    ap.add_argument("--index", type=int, help=f"the index to run with --stage (default: ${INDEX_ENV})")
    return ap.parse_args(argv)


def allowed_licences(spec: DatasetSpec) -> list[str]:
    allowed = list(dict.fromkeys(spec.allowed_licences))
    policy = os.environ.get(POLICY_ENV, "").strip()
    if policy:
        narrow = {x.strip() for x in policy.split(",") if x.strip()}
        allowed = [x for x in allowed if x in narrow]
    if not allowed:
        raise InputError(f"spec.allowedLicences: no licence is allowed by the operator's policy ({policy})")
    return allowed


def load(path: str, workers: int | None) -> tuple[DatasetSpec, str, tuple[str, ...]]:
    raw, spec = load_resource(path, DatasetSpec, "Dataset")
    if workers is not None:
        if workers < 1:
            raise InputError(f"--workers {workers} must be at least 1")
        spec = spec.model_copy(update={"workers": workers})
    return spec, raw.get("metadata", {}).get("name", "dataset"), tuple(allowed_licences(spec))


def run_index(path: str, workers: int | None, stage: str, index: int) -> dict:
    spec, name, allowed = load(path, workers)
    count = next(s.workers for s in preparation.plan(spec) if s.name == stage)
    if not 0 <= index < count:
        raise InputError(f"--index {index} must be in [0, {count}) for stage {stage}")
    return RUNNERS[stage](Context(spec, name, allowed, stage, index, count))


def run_all(path: str, workers: int | None) -> dict:
    """Every stage in order on this machine, each index in its own process (one: in this one)."""
    spec, _, _ = load(path, workers)
    result: dict = {}
    for stage in preparation.plan(spec):
        t0 = time.perf_counter()
        if stage.workers == 1:
            results = [run_index(path, workers, stage.name, 0)]
        else:
            with ProcessPoolExecutor(stage.workers, mp_context=get_context("spawn")) as pool:
                futures = [pool.submit(run_index, path, workers, stage.name, i) for i in range(stage.workers)]
                results = [f.result() for f in futures]
        result.setdefault("stageSeconds", {})[stage.name] = round(time.perf_counter() - t0, 3)
        if stage.name == "map":
            result["mapSeconds"] = [r["seconds"] for r in results]
    stats = results[0]
    return {"manifest": f"{spec.output.uri.rstrip('/')}/manifest.json", **stats, **result}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        t0 = time.perf_counter()
        if args.stage:
            index = args.index if args.index is not None else int(os.environ.get(INDEX_ENV, "0"))
            summary = run_index(args.file, args.workers, args.stage, index)
        else:
            summary = run_all(args.file, args.workers)
        summary["wallSeconds"] = round(time.perf_counter() - t0, 3)
    except (InvalidResource, InputError) as exc:
        print(f"prepare: {exc}", file=sys.stderr)
        return exitcodes.INVALID_CONFIG
    except MissingInput as exc:
        print(f"prepare: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary, sort_keys=True))
    return 0
