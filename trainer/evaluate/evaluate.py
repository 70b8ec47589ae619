"""Evaluate a model: perplexity, tasks, bias probes, gates; write results and a model card.

    python -m capstan_trainer.evaluate -f evaluation.yaml

The file is an Evaluation resource whose references the operator has resolved (model.uri,
validationUri, outputUri set). Writes results.json, README.md (model card) and status.json (what
the operator copies into status) to spec.outputUri. Exit 0 when the evaluation ran, whether or not
its gates passed; 3 for an invalid file (permanent); anything else is a crash worth retrying.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import yaml

from capstan_api import exitcodes, files
from capstan_api.common import InvalidResource, parse_spec
from capstan_api.evaluation import EvaluationSpec
from capstan_trainer import model_load, storage
from capstan_trainer.evaluate import bias, model_card, scoring, tasks, training_summary
from capstan_trainer.generation.engine import Engine
from capstan_trainer.shards import decode_shard, read_manifest


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def load_spec(path: str) -> tuple[str, EvaluationSpec]:
    try:
        with open(path) as f:
            obj = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidResource(f"{path}: cannot read: {exc}") from exc
    spec = parse_spec(EvaluationSpec, obj, "Evaluation", source=path)
    unresolved = []
    if spec.model.training_run_ref is not None:
        unresolved.append("spec.model.trainingRunRef: must be resolved to spec.model.uri before running")
    if spec.dataset_ref is not None:
        unresolved.append("spec.datasetRef: must be resolved to spec.validationUri before running")
    if not spec.output_uri:
        unresolved.append("spec.outputUri: required when running the evaluation")
    if unresolved:
        raise InvalidResource(f"{path}: " + "; ".join(unresolved))
    return (obj.get("metadata") or {}).get("name", "evaluation"), spec


def validation_texts(uri: str, limit: int) -> list[str]:
    """Documents for perplexity: a shard manifest's validation split (decoded with its tokenizer),
    a JSONL file's "text" fields, or one plain text file."""
    from tokenizers import Tokenizer

    if uri.endswith(".jsonl"):
        texts = [r["text"] for r in tasks.read_jsonl(uri, ("text",), "validationUri")]
    elif uri.endswith((".txt", ".md")):
        texts = [storage.read_bytes(uri).decode("utf-8")]
    else:
        m = read_manifest(uri)
        base = uri.rsplit("/", 1)[0] if uri.endswith(".json") else uri
        tok = Tokenizer.from_str(storage.read_bytes(storage.join(base, m.tokenizer["path"])).decode())
        tokens = np.concatenate(
            [
                decode_shard(storage.read_bytes(storage.join(base, s.path)), m.dtype)
                for s in m.splits["validation"].shards
            ]
        )
        ends = np.flatnonzero(tokens == m.eos_id)
        starts = np.concatenate([[0], ends[:-1] + 1])
        texts = [tok.decode(tokens[a:b].tolist()) for a, b in zip(starts, ends, strict=True) if b > a]
    texts = [t for t in texts if t.strip()]
    return texts[:limit] if limit else texts


@dataclass(frozen=True)
class Loaded:
    """The model on its device and what every step scores with."""

    lm: model_load.LoadedModel
    device: torch.device
    context: int  # tokens a scoring window may hold
    prefix: int  # token every document and probe is scored after: end-of-text, else 0
    batch_size: int

    def encode(self, text: str) -> list[int]:
        return self.lm.tokenizer.encode(text, add_special_tokens=False).ids

    def scorer(self, stage: str) -> scoring.Scorer:
        return scoring.Scorer(self.lm.model, self.context, self.batch_size, self.device, progress(stage))


def progress(stage: str) -> Callable[[int, int], None]:
    def report(done: int, total: int) -> None:
        emit({"event": "progress", "stage": stage, "done": done, "of": total})

    return report


def run(name: str, spec: EvaluationSpec) -> dict:
    t0 = time.perf_counter()
    # Read first: a bad baseline is a spec error found before any model is loaded.
    baseline = read_baseline(spec.baseline_results_uri) if spec.baseline_results_uri else None
    m = load_model(spec)
    results: dict = {"model": m.lm.meta.get("uri"), "contextLength": m.context, "tasks": []}
    metrics: dict[str, float] = {}
    if spec.validation_uri:
        results["perplexity"], found = perplexity(m, spec)
        metrics |= found
    results["tasks"], found = run_tasks(m, spec)
    metrics |= found
    pairs = bias.load_probes(spec.bias_probes.builtin, spec.bias_probes.uri)
    if pairs:
        results["bias"], found = bias_probes(m, spec, pairs)
        metrics |= found
    gates, passed = scoring.check_gates(spec.gates, metrics)
    results |= {"metrics": metrics, "gates": gates, "passed": passed, "seconds": time.perf_counter() - t0}
    if baseline:
        results["baseline"] = baseline
    write_outputs(name, spec, m.lm.meta, results)
    return results


def read_baseline(uri: str) -> dict:
    """The base model's figures: {"uri", "model", "metrics"} from its Evaluation's results.json."""
    try:
        base = json.loads(storage.read_bytes(uri))
        return {"uri": uri, "model": base.get("model"), "metrics": dict(base["metrics"])}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise tasks.TaskFileError(
            f"spec.baselineResultsUri: {uri} is not an Evaluation's results.json: {exc}"
        ) from exc


def load_model(spec: EvaluationSpec) -> Loaded:
    device = model_load.device_for(spec.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    lm = model_load.load(
        spec.model.checkpoint_uri(), device=device, dtype=dtype, tokenizer_uri=spec.model.tokenizer_uri
    )
    context = min(spec.context_length or lm.max_seq_len, lm.max_seq_len)
    prefix = lm.eos_id if lm.eos_id is not None else 0
    emit({"event": "loaded", "model": lm.meta.get("uri"), "device": str(device), "contextLength": context})
    return Loaded(lm, device, context, prefix, spec.batch_size)


def perplexity(m: Loaded, spec: EvaluationSpec) -> tuple[dict, dict[str, float]]:
    texts = validation_texts(spec.validation_uri, spec.max_validation_documents)
    scorer = m.scorer("perplexity")
    t = time.perf_counter()
    ppl = scoring.perplexity(scorer, m.encode, texts, m.prefix)
    ppl["tokens_per_second"] = ppl["tokens"] / (time.perf_counter() - t)
    metrics = {f"perplexity.{k}": v for k, v in ppl.items() if k != "tokens_per_second"}
    return {"source": spec.validation_uri, "metrics": ppl}, metrics


def run_tasks(m: Loaded, spec: EvaluationSpec) -> tuple[list[dict], dict[str, float]]:
    results, metrics = [], {}
    engine = None  # built at the first generation task, then shared
    for task in spec.tasks:
        field = f"spec.tasks[{task.name}]"
        if task.type == "multipleChoice":
            rows = tasks.read_jsonl(task.uri, ("context", "choices", "gold"), field, task.limit)
            found = tasks.multiple_choice(m.scorer(f"task.{task.name}"), m.encode, rows, m.prefix, field)
            extra = {}
        else:
            required = ("messages",) if task.type == "chat" else ("prompt", "answer")
            rows = tasks.read_jsonl(task.uri, required, field, task.limit)
            engine = engine or Engine(
                m.lm, max_batch_size=m.batch_size, max_queue=1 << 30, max_model_len=m.context
            )
            if task.type == "chat":
                found, preds = tasks.chat(engine, m.lm, rows, task, field)
            else:
                found, preds = tasks.exact_match(engine, m.encode, rows, task, m.prefix)
            extra = {"predictions": preds[:20]}
        results.append({"name": task.name, "type": task.type, "uri": task.uri, "metrics": found, **extra})
        metrics |= {f"task.{task.name}.{k}": v for k, v in found.items()}
        emit({"event": "task", "name": task.name, **found})
    return results, metrics


def bias_probes(m: Loaded, spec: EvaluationSpec, pairs: list[dict]) -> tuple[dict, dict[str, float]]:
    probes = bias.score(m.scorer("bias"), m.encode, pairs, m.prefix)
    probes["sources"] = (["builtin"] if spec.bias_probes.builtin else []) + (
        [spec.bias_probes.uri] if spec.bias_probes.uri else []
    )
    metrics = {
        "bias.pct_stereotype": probes["overall"]["pct_stereotype"],
        "bias.likelihood_diff": probes["overall"]["likelihood_diff"],
    }
    for cat, s in probes["categories"].items():
        metrics[f"bias.{bias.slug(cat)}.pct_stereotype"] = s["pct_stereotype"]
    return probes, metrics


def write_outputs(name: str, spec: EvaluationSpec, meta: dict, results: dict) -> None:
    """results.json, the model card, then status.json (what the operator copies into status)."""
    out = spec.output_uri
    results_uri, card_uri = storage.join(out, files.RESULTS_FILE), storage.join(out, files.MODEL_CARD_FILE)
    storage.write_bytes(results_uri, json.dumps(results, indent=2).encode())
    storage.write_bytes(card_uri, model_card.render(name, spec, meta, results).encode())
    summary = training_summary.build(meta, training_summary.read_manifests(meta))
    storage.write_bytes(
        storage.join(out, files.TRAINING_SUMMARY_JSON), json.dumps(summary, indent=2).encode()
    )
    summary_uri = storage.join(out, files.TRAINING_SUMMARY_FILE)
    storage.write_bytes(summary_uri, training_summary.render(summary).encode())
    outcome = files.EvaluationOutcome(
        metrics=results["metrics"],
        gates=results["gates"],
        passed=results["passed"],
        model_uri=meta.get("uri"),
        results_uri=results_uri,
        model_card_uri=card_uri,
        training_summary_uri=summary_uri,
    )
    storage.write_bytes(storage.join(out, files.EVALUATION_STATUS_FILE), outcome.to_json().encode())
    failed = [g["metric"] for g in results["gates"] if not g["passed"]]
    emit({"event": "done", "passed": results["passed"], "failedGates": failed, "resultsUri": results_uri})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="capstan_trainer.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("-f", "--file", required=True, help="Evaluation resource (YAML or JSON)")
    a = p.parse_args(argv)
    try:
        name, spec = load_spec(a.file)
    except InvalidResource as exc:
        print(exc, file=sys.stderr)
        return exitcodes.INVALID_CONFIG
    try:
        run(name, spec)
    except (tasks.TaskFileError, FileNotFoundError) as exc:
        print(f"{a.file}: {exc}", file=sys.stderr)
        return exitcodes.INVALID_CONFIG
    return 0
