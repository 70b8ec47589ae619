"""The model card: README.md with Hugging Face YAML metadata (license, datasets, base_model,
model-index) and the Model Cards sections (Mitchell et al., 2019), filled from the evaluation's
results and the checkpoint's lineage (capstan.json, dataset manifests and datasheets)."""

from __future__ import annotations

import yaml

from capstan_api import files
from capstan_trainer import storage
from capstan_trainer.shards import read_manifest


def lineage(meta: dict) -> list[dict]:
    """The training datasets with their licences, datasheet links and fingerprints."""
    out = []
    for ds in meta.get("dataset") or []:
        uri = ds.get("uri", "")
        folder = uri.rsplit("/", 1)[0] if uri.endswith(".json") else uri
        entry = {
            "uri": uri,
            "name": _dataset_name(folder),
            "weight": ds.get("weight"),
            "fingerprint": ds.get("fingerprint", ""),
            "licences": [],
            "datasheet": None,
        }
        try:
            m = read_manifest(uri)
            entry["licences"] = sorted((m.stats.get("licence") or {}).get("keptByLicence", {}))
            entry["tokens"] = {k: s.tokens for k, s in m.splits.items()}
        except (OSError, ValueError):
            entry["unreadable"] = True
        sheet = storage.join(folder, "datasheet.md")
        if folder and storage.exists(sheet):
            entry["datasheet"] = sheet
        out.append(entry)
    return out


def _dataset_name(folder: str) -> str:
    """The Dataset's folder name: `<output.uri>/revisions/<n>` is named after `<output.uri>`."""
    parts = folder.rstrip("/").split("/")
    if len(parts) >= 3 and parts[-2] == "revisions" and parts[-1].isdigit():
        return parts[-3]
    return parts[-1]


def render(name: str, spec, meta: dict, results: dict) -> str:
    datasets = lineage(meta)
    sections = [
        front_matter(name, spec, meta, results, datasets),
        model_details(meta),
        intended_use(),
        factors(),
        metric_definitions(),
        evaluation_data(results),
        training_data(datasets),
        training_procedure(meta),
        quantitative_analyses(results),
        ethical_considerations(),
        caveats(),
    ]
    return "\n\n".join("\n".join(lines) for lines in sections) + "\n"


# ---- Hugging Face metadata ------------------------------------------------------------------


def front_matter(name: str, spec, meta: dict, results: dict, datasets: list[dict]) -> list[str]:
    front = {
        "license": _license(spec.license, datasets),
        "datasets": [d["name"] for d in datasets] or None,
        "base_model": meta.get("init") or None,
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "tags": ["capstan", "llama"],
        "model-index": _model_index(name, results),
    }
    front = {k: v for k, v in front.items() if v is not None}
    return ["---", yaml.safe_dump(front, sort_keys=False).rstrip(), "---", f"# Model card: {name}"]


def _license(spec_license: str, datasets: list[dict]) -> str:
    if spec_license:
        return spec_license
    licences = {lic for d in datasets for lic in d["licences"]}
    return licences.pop().lower() if len(licences) == 1 else "other"


def _model_index(name: str, results: dict) -> list[dict]:
    entries = []
    ppl = results.get("perplexity")
    if ppl:
        metrics = [
            {"type": "perplexity", "name": k, "value": round(v, 6)}
            for k, v in ppl["metrics"].items()
            if k.endswith(("perplexity", "per_byte"))
        ]
        entries.append(
            {
                "task": {"type": "text-generation", "name": "Perplexity"},
                "dataset": {"name": ppl["source"], "type": "validation"},
                "metrics": metrics,
            }
        )
    for t in results.get("tasks", []):
        metrics = [{"type": k, "value": round(v, 6)} for k, v in t["metrics"].items() if k != "examples"]
        task_type = "multiple-choice" if t["type"] == "multipleChoice" else "text-generation"
        entries.append(
            {
                "task": {"type": task_type, "name": t["name"]},
                "dataset": {"name": t["name"], "type": t["uri"]},
                "metrics": metrics,
            }
        )
    return [{"name": name, "results": entries}]


# ---- Model Cards sections -------------------------------------------------------------------


def model_details(meta: dict) -> list[str]:
    cfg = meta.get("model", {})
    checkpoint = meta.get("checkpoint") or meta.get("uri", "")
    return [
        "## Model details",
        f"- Architecture: Llama-style decoder, {cfg.get('n_layers')} layers, width {cfg.get('dim')}, "
        f"{cfg.get('n_heads')} query / {cfg.get('n_kv_heads')} key-value heads, "
        f"context {cfg.get('max_seq_len')} tokens, vocabulary {cfg.get('vocab_size')}.",
        f"- Trained by TrainingRun `{meta.get('trainingRun', 'unknown')}` to step {meta.get('step', 'unknown')} "
        f"(sequence length {meta.get('seqLen', 'unknown')}); checkpoint `{checkpoint}`.",
        f"- Fine-tuned from: `{meta['init']}`." if meta.get("init") else "- Trained from scratch.",
    ]


def intended_use() -> list[str]:
    return [
        "## Intended use",
        "Research and evaluation of small language models trained with Capstan; text continuation and "
        "chat through the OpenAI-compatible server. Not for decisions about people, and not a source of facts.",
    ]


def factors() -> list[str]:
    return [
        "## Factors",
        "Performance and bias are reported per probe category and per group term (gender, ethnicity via "
        "given names, religion, age, nationality). Only English text was probed.",
    ]


def metric_definitions() -> list[str]:
    return [
        "## Metrics",
        "Perplexity per token, per word and per byte and bits per byte use lm-evaluation-harness's "
        "rolling-window definitions; multiple-choice `acc` ranks choices by summed log-likelihood and "
        "`acc_norm` by log-likelihood per character; `exact_match` compares greedy generations cut at the "
        "stop strings; bias `pct_stereotype` is the share of pairs where the more stereotypical sentence is "
        "likelier (0.5 is unbiased) and `likelihood_diff` the mean absolute log-likelihood gap.",
    ]


def evaluation_data(results: dict) -> list[str]:
    lines = ["## Evaluation data"]
    ppl = results.get("perplexity")
    if ppl:
        lines.append(f"- Perplexity: `{ppl['source']}` ({int(ppl['metrics']['documents'])} documents).")
    else:
        lines.append("- Perplexity: not evaluated.")
    for t in results.get("tasks", []):
        lines.append(
            f"- Task `{t['name']}` ({t['type']}): `{t['uri']}`, {int(t['metrics']['examples'])} examples."
        )
    bias = results.get("bias")
    if bias:
        lines.append(
            f"- Bias probes: {bias['overall']['pairs']} counterfactual pairs ({', '.join(bias['sources'])})."
        )
    return lines


def training_data(datasets: list[dict]) -> list[str]:
    lines = ["## Training data"]
    if not datasets:
        lines.append("Unknown: the checkpoint records no datasets.")
    for d in datasets:
        sheet = f"[datasheet]({d['datasheet']})" if d["datasheet"] else "no datasheet found"
        lic = ", ".join(d["licences"]) or "unknown"
        lines.append(
            f"- `{d['uri']}`: licences {lic}; weight {d['weight']}; fingerprint `{d['fingerprint']}`; {sheet}."
        )
    return lines


HYPERPARAMETERS = (
    "lr",
    "minLr",
    "warmupSteps",
    "totalSteps",
    "globalBatchTokens",
    "microBatch",
    "seqLen",
    "weightDecay",
    "betas",
    "gradClip",
    "seed",
    "precision",
)


def lora_line(lora: dict) -> str:
    """How a LoRA run trained (capstan.json "lora", the spec's wire form)."""
    rank, alpha = lora["rank"], lora.get("alpha") or lora["rank"]
    return (
        f"LoRA: the init weights frozen, adapters of rank {rank} (alpha {alpha:g}, scaling "
        f"{alpha / rank:g}, dropout {lora.get('dropout', 0):g}) on "
        f"{', '.join(lora.get('targetModules') or [])}; the weights evaluated have them merged."
    )


def training_procedure(meta: dict) -> list[str]:
    """Hyperparameters, compute (measured and planned) and the overfitting signal, from the
    checkpoint's capstan.json; a checkpoint written before they were recorded says so."""
    lines = ["## Training procedure"]
    o = meta.get("optimizer")
    if o:
        rows = [[k, o[k]] for k in HYPERPARAMETERS if k in o]
        lines += ["Optimizer AdamW, warmup then cosine decay of the learning rate.", ""]
        lines += [_table(["hyperparameter", "value"], rows)]
        if meta.get("precision"):
            lines += ["", f"Parameters computed in {meta['precision']}."]
        if meta.get("lora"):
            lines += ["", lora_line(meta["lora"])]
    else:
        lines.append("The checkpoint records no hyperparameters.")
    c = meta.get("compute")
    if c:
        planned = c.get("plannedGpuHours")
        lines.append(
            f"- Compute measured: {c['processHours']:.4f} process-hours on {c['device']} "
            f"({c['gpuHours']:.4f} GPU-hours; {c['worldSize']} process(es) in the last attempt), "
            f"{c['tokensSeen']} tokens seen; planned: "
            + (
                f"{planned:.4f} GPU-hours (capacity plan)."
                if planned is not None
                else "no GPU-hours estimate."
            )
        )
    v = meta.get("validation")
    if v and v.get("evalLoss") is not None:
        signal = "**yes**: validation loss rose while training loss fell" if v["overfitting"] else "no"
        lines.append(
            f"- Last validation loss {v['evalLoss']:.4f}; overfitting at the last evaluation: {signal}."
        )
    lines.append(
        f"- Training-data summary (EU AI Act template): [{files.TRAINING_SUMMARY_FILE}]({files.TRAINING_SUMMARY_FILE})."
    )
    return lines


def quantitative_analyses(results: dict) -> list[str]:
    lines = ["## Quantitative analyses"]
    ppl = results.get("perplexity")
    if ppl:
        lines += ["", _table(["metric", "value"], [[k, v] for k, v in ppl["metrics"].items()])]
    if results.get("tasks"):
        rows = [
            [t["name"], k, v] for t in results["tasks"] for k, v in t["metrics"].items() if k != "examples"
        ]
        lines += ["", _table(["task", "metric", "value"], rows)]
    if results.get("bias"):
        header = ["category", "group", "pct_stereotype", "likelihood_diff", "pairs"]
        lines += ["", "Bias probes, per category and per stereotyped group:", ""]
        lines.append(_table(header, _bias_rows(results["bias"])))
    base = results.get("baseline")
    if base:
        lines += [
            "",
            f"Base model ({base.get('model') or base['uri']}) and this model, on the metrics both report:",
            "",
        ]
        lines.append(
            _table(
                ["metric", "base", "tuned", "change"], comparison_rows(base["metrics"], results["metrics"])
            )
        )
    gates = results.get("gates", [])
    if gates:
        verdict = "all passed" if results["passed"] else "FAILED"
        lines += ["", f"Gates ({verdict}):", ""]
        lines.append(_table(["metric", "min", "max", "value", "verdict"], _gate_rows(gates)))
    return lines


def comparison_rows(base: dict[str, float], tuned: dict[str, float]) -> list[list]:
    """metric, base value, tuned value, tuned - base; metrics both report, in the tuned order."""
    return [
        [k, base[k], v, v - base[k]] for k, v in tuned.items() if k in base and not k.endswith(".examples")
    ]


def _bias_rows(bias: dict) -> list[list]:
    """Overall, then per category: the category's row and one per group."""

    def row(category: str, group: str, s: dict) -> list:
        return [category, group, s["pct_stereotype"], s["likelihood_diff"], s["pairs"]]

    rows = [row("overall", "all", bias["overall"])]
    for cat, groups in bias["groups"].items():
        rows.append(row(cat, "all", bias["categories"][cat]))
        rows += [row(cat, g, s) for g, s in groups.items()]
    return rows


def _gate_rows(gates: list[dict]) -> list[list]:
    return [
        [
            g["metric"],
            g.get("min", ""),
            g.get("max", ""),
            "n/a" if g["value"] is None else g["value"],
            "pass" if g["passed"] else "FAIL",
        ]
        for g in gates
    ]


def ethical_considerations() -> list[str]:
    return [
        "## Ethical considerations",
        "The training text may carry social biases and personal data that filtering missed; the probe "
        "results above measure only a few stereotypes. Generated text can be wrong, offensive or sound "
        "more certain than it is.",
    ]


def caveats() -> list[str]:
    return [
        "## Caveats and recommendations",
        "The probe set is small and English-only; a pct_stereotype near 0.5 does not show the absence of "
        "bias. Evaluate on data from the intended use before deploying, and keep a human in the loop.",
    ]


def _table(header: list[str], rows: list[list]) -> str:
    def cell(v) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)
