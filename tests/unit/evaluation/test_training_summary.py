"""The EU AI Act training-data summary and the model card's training procedure as pure
functions of what the checkpoint and the manifests recorded."""

from __future__ import annotations

from capstan_trainer.evaluate import model_card, training_summary
from capstan_trainer.prepare.content import domain
from capstan_trainer.shards import Manifest, ShardInfo, SplitInfo


def _manifest(train_tokens: int, sources: list[dict], top: dict, with_url: int, **stats) -> Manifest:
    return Manifest(
        dtype="uint16",
        vocab_size=100,
        eos_id=0,
        tokenizer={},
        splits={"train": SplitInfo([ShardInfo("t.bin", train_tokens, "")], 10), "validation": SplitInfo()},
        stats={"sources": sources, "domains": {"tokensWithUrl": with_url, "top": top}, **stats},
    )


def _source(uri: str, type_: str, tokens: int, collected: str = "") -> dict:
    return {"uri": uri, "type": type_, "licence": "CC-BY-4.0", "collected": collected, "tokens": tokens}


def test_sources_by_type_and_top_domains_across_datasets():
    web = _manifest(
        900,
        [_source("s3://c/web", "scraped", 1000, "2026-10"), _source("s3://c/gen", "synthetic", 100)],
        {"a.org": 600, "b.org": 300},
        1000,
        pii={"email": 3},
        licence={"keptByLicence": {"CC-BY-4.0": 40}, "excludedByLicence": {"CC-BY-NC-4.0": 2}},
        exactDuplicates=5,
    )
    more = _manifest(90, [_source("s3://c/web2", "scraped", 100, "2026-11")], {"b.org": 100}, 100)
    meta = {"trainingRun": "r", "step": 7, "dataset": [{"uri": "x"}, {"uri": "y"}, {"uri": "gone"}]}
    s = training_summary.build(meta, [({"uri": "x"}, web), ({"uri": "y"}, more), ({"uri": "gone"}, None)])
    g = s["generalInformation"]
    assert g["trainingDataSize"]["text"] == {"tokens": 990, "range": "Less than 1 billion tokens"}
    assert g["latestDataCollection"] == "2026-11" and g["unreadableDatasets"] == ["gone"]
    src = s["dataSources"]
    assert src["scraped"]["tokens"] == 1100 and src["synthetic"]["tokens"] == 100
    assert src["public"]["sources"] == [] and src["user"]["tokens"] == 0
    # b.org: 300 + 100 of the 1100 tokens that had a URL.
    assert src["scraped"]["topDomains"] == [
        {"domain": "a.org", "tokens": 600, "share": 0.5455},
        {"domain": "b.org", "tokens": 400, "share": 0.3636},
    ]
    p = s["dataProcessing"]
    assert p["licences"]["documentsExcluded"] == {"CC-BY-NC-4.0": 2}
    assert p["personalData"]["redactions"] == {"email": 3} and p["removedDocuments"]["exactDuplicates"] == 5
    md = training_summary.render(s)
    assert "| a.org | 600 | 0.5455 |" in md and "### 2.4 User data\nNone." in md
    assert "Unreadable dataset manifests: gone." in md


def test_size_bins_follow_the_template():
    assert training_summary.size_range(10**9 - 1) == "Less than 1 billion tokens"
    assert training_summary.size_range(10**9) == "1 billion to 10 trillion tokens"
    assert training_summary.size_range(10**13 + 1) == "More than 10 trillion tokens"


def test_domain_of_a_url():
    assert domain("https://www.Example.org:8080/a?b") == "example.org"
    assert domain("news.example.com/x") == "news.example.com"
    assert domain("not a url") == ""


def test_model_card_reports_overfitting_and_the_plan():
    meta = {
        "optimizer": {"lr": 0.001, "seed": 3, "precision": "auto"},
        "precision": "bfloat16",
        "compute": {
            "processHours": 2.0,
            "gpuHours": 2.0,
            "device": "cuda",
            "worldSize": 8,
            "plannedGpuHours": 1.5,
            "tokensSeen": 10,
        },
        "validation": {"evalLoss": 2.5, "overfitting": True},
    }
    text = "\n".join(model_card.training_procedure(meta))
    assert "| seed | 3 |" in text and "computed in bfloat16" in text
    assert "2.0000 GPU-hours" in text and "planned: 1.5000 GPU-hours" in text
    assert "overfitting at the last evaluation: **yes**" in text
    assert "LoRA" not in text
    lora = {"rank": 8, "alpha": 16.0, "targetModules": ["q_proj", "v_proj"], "dropout": 0.0}
    tuned = "\n".join(model_card.training_procedure({**meta, "lora": lora}))
    assert "adapters of rank 8 (alpha 16, scaling 2, dropout 0) on q_proj, v_proj" in tuned
    bare = "\n".join(model_card.training_procedure({}))
    assert "records no hyperparameters" in bare and "overfitting" not in bare
