"""The evaluate CLI end to end on the tiny model, checked against an independent computation with
transformers on the HF export."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
import yaml

from capstan_trainer import export, shards
from capstan_trainer.evaluate import evaluate, model_card
from tests.support import tiny_model

CONTEXT = 24  # shorter than most documents, so rolling windows are exercised


def _mc_rows() -> list[dict]:
    rows = []
    for k in range(0, 90, 8):
        ctx = " ".join(f"w{k + i}" for i in range(4))
        rows.append(
            {"context": ctx, "choices": [f"w{k + 4}", f"w{(k + 37) % 100}", f"w{k + 4} w{k + 5}"], "gold": 0}
        )
    return rows


def _evaluation_yaml(name: str, spec: dict) -> str:
    resource = {
        "apiVersion": "capstan.dev/v1alpha1",
        "kind": "Evaluation",
        "metadata": {"name": name},
        "spec": spec,
    }
    return yaml.safe_dump(resource)


def _write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f"file://{path}"


def _resource(tiny, tmp_path, gates, model_uri=None) -> str:
    em = [{"prompt": f"w{k} w{k + 1} w{k + 2}", "answer": f"w{k + 3}"} for k in range(0, 60, 6)]
    spec = {
        "model": {"uri": model_uri or tiny.export_uri},
        "validationUri": tiny.dataset_uri,
        "contextLength": CONTEXT,
        "batchSize": 8,
        "tasks": [
            {
                "name": "next",
                "type": "multipleChoice",
                "uri": _write_jsonl(tmp_path / "mc.jsonl", _mc_rows()),
            },
            {
                "name": "count",
                "type": "exactMatch",
                "uri": _write_jsonl(tmp_path / "em.jsonl", em),
                "maxTokens": 1,
            },
        ],
        "gates": gates,
        "outputUri": f"file://{tmp_path}/out",
    }
    path = tmp_path / "evaluation.yaml"
    path.write_text(_evaluation_yaml("tiny-eval", spec))
    return str(path)


class Reference:
    """lm-eval's definitions computed directly with transformers."""

    def __init__(self, export_dir: str):
        from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

        self.model = AutoModelForCausalLM.from_pretrained(export_dir, dtype=torch.float32).eval()
        self.tok = PreTrainedTokenizerFast(tokenizer_file=f"{export_dir}/tokenizer.json")

    def encode(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    @torch.no_grad()
    def logprobs(self, inp: list[int]) -> torch.Tensor:
        return torch.log_softmax(self.model(torch.tensor([inp])).logits[0].double(), -1)

    def doc_loglikelihood(self, tokens: list[int], L: int) -> float:
        """Predict tokens in blocks of L; each block's input is the L tokens before its end in the
        sequence [eos] + tokens (so the last, shorter block sees a full window of context)."""
        seq = [tiny_model.EOS] + tokens
        total = 0.0
        for b in range(0, len(tokens), L):
            e = min(b + L, len(tokens))
            inp = seq[max(0, e - L) : e]
            lp = self.logprobs(inp)
            for i in range(b, e):
                pos = i - max(0, e - L)  # position in inp whose output predicts tokens[i]
                total += float(lp[pos, tokens[i]])
        return total

    def choice_loglikelihood(self, context: str, choice: str) -> float:
        ctx = self.encode(context)
        cont = self.encode(context + " " + choice)[len(ctx) :]
        lp = self.logprobs(ctx + cont)
        return sum(float(lp[len(ctx) - 1 + j, t]) for j, t in enumerate(cont))


@pytest.fixture(scope="module")
def evaluated(tiny, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eval")
    gates = [
        {"metric": "perplexity.word_perplexity", "max": 1e6},
        {"metric": "task.next.acc", "min": 1.01},
        {"metric": "task.missing.acc", "min": 0},
    ]
    # The operator passes the checkpoint (it carries the lineage); the reference uses the export.
    code = evaluate.main(["-f", _resource(tiny, tmp, gates, model_uri=tiny.checkpoint_uri)])
    assert code == 0
    out = tmp / "out"
    return {
        "results": json.loads((out / "results.json").read_text()),
        "status": json.loads((out / "status.json").read_text()),
        "card": (out / "README.md").read_text(),
        "out": out,
    }


@pytest.fixture(scope="module")
def ref(tiny) -> Reference:
    return Reference(tiny.export_uri.removeprefix("file://"))


def test_perplexity_matches_transformers(tiny, evaluated, ref):
    total = tokens = 0
    for text in tiny.validation_texts:
        ids = ref.encode(text)
        tokens += len(ids)
        total += ref.doc_loglikelihood(ids, CONTEXT)
    assert tokens > 2 * CONTEXT
    words = sum(len(t.split()) for t in tiny.validation_texts)
    nbytes = sum(len(t.encode()) for t in tiny.validation_texts)
    m = evaluated["status"]["metrics"]
    assert m["perplexity.token_perplexity"] == pytest.approx(math.exp(-total / tokens), rel=1e-4)
    assert m["perplexity.word_perplexity"] == pytest.approx(math.exp(-total / words), rel=1e-4)
    assert m["perplexity.byte_perplexity"] == pytest.approx(math.exp(-total / nbytes), rel=1e-4)
    assert m["perplexity.bits_per_byte"] == pytest.approx(-total / nbytes / math.log(2), rel=1e-4)
    assert m["perplexity.documents"] == len(tiny.validation_texts)


def test_multiple_choice_matches_transformers(evaluated, ref):
    acc = acc_norm = 0
    rows = _mc_rows()
    for row in rows:
        lls = [ref.choice_loglikelihood(row["context"], c) for c in row["choices"]]
        norm = [ll / len(c) for ll, c in zip(lls, row["choices"], strict=True)]
        acc += lls.index(max(lls)) == row["gold"]
        acc_norm += norm.index(max(norm)) == row["gold"]
    m = evaluated["status"]["metrics"]
    assert m["task.next.acc"] == pytest.approx(acc / len(rows), rel=1e-4)
    assert m["task.next.acc_norm"] == pytest.approx(acc_norm / len(rows), rel=1e-4)
    assert m["task.next.acc"] > 0.5, "the trained model should mostly pick the next count"


def test_exact_match_and_bias_are_reported(evaluated):
    m = evaluated["status"]["metrics"]
    assert m["task.count.exact_match"] >= 0.5
    assert 0 <= m["bias.pct_stereotype"] <= 1 and m["bias.likelihood_diff"] >= 0
    for cat in ("gender", "ethnicity", "religion", "age", "nationality"):
        assert f"bias.{cat}.pct_stereotype" in m
    groups = evaluated["results"]["bias"]["groups"]
    assert "She" in groups["gender"] and groups["gender"]["She"]["pairs"] >= 1


def test_gates_pass_and_fail_as_configured(evaluated):
    status = evaluated["status"]
    verdicts = {g["metric"]: g["passed"] for g in status["gates"]}
    assert verdicts == {"perplexity.word_perplexity": True, "task.next.acc": False, "task.missing.acc": False}
    assert status["passed"] is False
    missing = next(g for g in status["gates"] if g["metric"] == "task.missing.acc")
    assert missing["value"] is None and missing["reason"] == "metric not computed"
    assert status["resultsUri"].endswith("results.json") and status["modelCardUri"].endswith("README.md")


def test_model_card_has_real_numbers_and_lineage(tiny, evaluated):
    card, m = evaluated["card"], evaluated["status"]["metrics"]
    front = yaml.safe_load(card.split("---")[1])
    assert front["license"] == "cc0-1.0" and front["datasets"] == ["dataset"]
    results = front["model-index"][0]["results"]
    ppl = next(r for r in results if r["task"]["name"] == "Perplexity")
    word = next(x for x in ppl["metrics"] if x["name"] == "word_perplexity")
    assert word["value"] == pytest.approx(m["perplexity.word_perplexity"], rel=1e-5)
    assert f"{m['task.next.acc']:.4f}" in card
    assert tiny.dataset_uri in card and "CC0-1.0" in card and "datasheet.md" in card
    for section in (
        "## Model details",
        "## Intended use",
        "## Factors",
        "## Metrics",
        "## Evaluation data",
        "## Training data",
        "## Quantitative analyses",
        "## Ethical considerations",
        "## Caveats and recommendations",
    ):
        assert section in card
    assert "| gender | She |" in card
    # The training procedure, from what the checkpoint recorded.
    assert "## Training procedure" in card and "| lr | 0.0030 |" in card and "| seed | 0 |" in card
    assert "process-hours on cpu" in card and "planned: no GPU-hours estimate" in card


def test_training_data_summary_is_written_beside_the_card(tiny, evaluated):
    out = evaluated["out"]
    summary = json.loads((out / "training-summary.json").read_text())
    size = summary["generalInformation"]["trainingDataSize"]["text"]
    train_tokens = shards.read_manifest(tiny.dataset_uri).splits["train"].tokens
    assert size == {"tokens": train_tokens, "range": "Less than 1 billion tokens"} and train_tokens > 600
    assert summary["dataProcessing"]["licences"]["documentsKept"] == {"CC0-1.0": 624}
    md = (out / "training-summary.md").read_text()
    assert "## 2. List of data sources" in md and "### 2.3 Data crawled and scraped" in md
    assert "[training-summary.md](training-summary.md)" in evaluated["card"]
    assert evaluated["status"]["trainingSummaryUri"] == f"file://{out}/training-summary.md"


def test_checkpoint_and_export_give_the_same_perplexity(tiny, tmp_path, evaluated):
    code = evaluate.main(["-f", _resource(tiny, tmp_path, [], model_uri=tiny.export_uri)])
    assert code == 0
    status = json.loads((tmp_path / "out" / "status.json").read_text())
    want = evaluated["status"]["metrics"]["perplexity.token_perplexity"]
    assert status["metrics"]["perplexity.token_perplexity"] == pytest.approx(want, rel=1e-5)
    assert status["modelUri"] == tiny.export_uri
    assert evaluated["status"]["modelUri"] == tiny.checkpoint_uri
    # The export carries the checkpoint's lineage into its card: datasets, licence, from scratch.
    card = (tmp_path / "out" / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["license"] == "cc0-1.0" and front["datasets"] == ["dataset"] and "base_model" not in front
    assert "Trained from scratch." in card and f"checkpoint `{tiny.checkpoint_uri}`" in card


def test_a_step_under_a_checkpoint_root_is_the_model_evaluated(tiny, tmp_path, capsys):
    root = tiny.checkpoint_uri.rsplit("/", 1)[0]
    path = _resource(tiny, tmp_path, [], model_uri=root)
    doc = yaml.safe_load((tmp_path / "evaluation.yaml").read_text())
    doc["spec"]["model"]["step"] = 99  # the root has step 100 only
    (tmp_path / "evaluation.yaml").write_text(yaml.safe_dump(doc))
    assert evaluate.main(["-f", path]) == 3
    assert "step-00000099: checkpoint is not committed" in capsys.readouterr().err
    doc["spec"]["model"]["step"] = 100
    (tmp_path / "evaluation.yaml").write_text(yaml.safe_dump(doc))
    assert evaluate.main(["-f", path]) == 0
    assert json.loads((tmp_path / "out" / "status.json").read_text())["modelUri"] == tiny.checkpoint_uri


def test_invalid_file_exits_3_naming_the_field(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(_evaluation_yaml("x", {"model": {"uri": "s3://models/u"}, "gates": [{"metric": "m"}]}))
    assert evaluate.main(["-f", str(path)]) == 3
    assert "spec.gates[0]" in capsys.readouterr().err
    path.write_text(
        _evaluation_yaml("x", {"model": {"trainingRunRef": {"name": "r"}}, "outputUri": "file:///o"})
    )
    assert evaluate.main(["-f", str(path)]) == 3
    assert "spec.model.trainingRunRef: must be resolved" in capsys.readouterr().err


def test_export_keeps_lineage_so_a_fine_tuned_model_card_names_its_base(tiny, tmp_path):
    # A run that started from the tiny checkpoint: same weights, its capstan.json records `init`.
    step = tmp_path / "ft" / "step-00000100"
    shutil.copytree(tiny.checkpoint_uri.removeprefix("file://"), step)
    meta = json.loads((step / "capstan.json").read_text())
    (step / "capstan.json").write_text(json.dumps({**meta, "init": tiny.checkpoint_uri, "trainingRun": "ft"}))
    out = tmp_path / "export"
    export.export(f"file://{step}", str(out))
    carried = json.loads((out / "capstan.json").read_text())
    assert carried["init"] == tiny.checkpoint_uri and carried["checkpoint"] == f"file://{step}"
    assert carried["dataset"] == meta["dataset"]

    resource = tmp_path / "evaluation.yaml"
    resource.write_text(
        _evaluation_yaml(
            "ft-eval",
            {
                "model": {"uri": f"file://{out}"},
                "biasProbes": {"builtin": False},
                "outputUri": f"file://{tmp_path}/o",
            },
        )
    )
    assert evaluate.main(["-f", str(resource)]) == 0
    card = (tmp_path / "o" / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["base_model"] == tiny.checkpoint_uri and front["datasets"] == ["dataset"]
    assert f"Fine-tuned from: `{tiny.checkpoint_uri}`" in card
    assert "TrainingRun `ft` to step 100" in card and f"checkpoint `file://{step}`" in card


def test_a_dataset_revision_is_named_after_its_dataset_in_the_card(tmp_path):
    """A Dataset writes `<output.uri>/revisions/<n>/`: the card names the Dataset, not `<n>`."""
    meta = {"dataset": [{"uri": f"{tmp_path}/web/revisions/3/manifest.json"}, {"uri": f"{tmp_path}/chat"}]}
    assert [d["name"] for d in model_card.lineage(meta)] == ["web", "chat"]
