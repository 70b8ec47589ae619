"""Input formats, bad input (exit code 3 naming the field or file) and the spec's cross-field rules."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
import zstandard

from capstan_api.common import InvalidResource, parse_spec
from capstan_api.dataset import DatasetSpec
from capstan_trainer import shards
from capstan_trainer.prepare.prepare import main

PLAIN = {  # filters and dedup off: every record that parses reaches the output
    "filters": {
        k: {"enabled": False}
        for k in ("length", "language", "gopherRepetition", "gopherQuality", "c4", "fineweb")
    },
    "dedup": {"exact": False, "near": {"enabled": False}},
    "tokenizer": {"vocabSize": 300},
    "output": {"validationFraction": 0.0, "shardTokens": 100000},
}


def local(path: Path) -> str:
    """A local file as the file:// URI the spec requires."""
    return f"file://{path}"


def resource(sources: list[dict], out: Path, **spec) -> dict:
    s = {"sources": sources, **json.loads(json.dumps(PLAIN)), **spec}
    s["output"] = {**s["output"], "uri": local(out)}
    return {"apiVersion": "capstan.dev/v1alpha1", "kind": "Dataset", "metadata": {"name": "t"}, "spec": s}


def run(tmp: Path, res: dict, capsys) -> tuple[int, str]:
    path = tmp / "ds.yaml"
    path.write_text(yaml.safe_dump(res))
    code = main(["-f", str(path)])
    out, err = capsys.readouterr()
    return code, out if code == 0 else err


def test_every_format_and_compression(tmp_path, capsys):
    texts = [f"Document number {i} says hello to the reader." for i in range(6)]
    jsonl = "".join(json.dumps({"text": t}) + "\n" for t in texts[:2]).encode()
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(jsonl))
    # a zstd frame without a content size, as the zstd CLI writes from a pipe
    cctx = zstandard.ZstdCompressor()
    (tmp_path / "b.jsonl.zst").write_bytes(cctx.compress(jsonl))
    pq.write_table(pa.table({"content": texts[2:4], "licence": ["CC0-1.0", "MIT"]}), tmp_path / "c.parquet")
    (tmp_path / "txt").mkdir()
    for i, t in enumerate(texts[4:]):
        (tmp_path / "txt" / f"{i}.txt").write_text(t)
    sources = [
        {"uri": local(tmp_path / "a.jsonl.gz"), "licence": "CC-BY-4.0"},
        {"uri": f"file://{tmp_path}/*.zst", "licence": "CC-BY-4.0"},
        {
            "uri": local(tmp_path / "c.parquet"),
            "format": "parquet",
            "textField": "content",
            "licence": "CC-BY-4.0",
        },
        {"uri": local(tmp_path / "txt"), "format": "text", "licence": "CC-BY-4.0"},
    ]
    code, out = run(tmp_path, resource(sources, tmp_path / "out"), capsys)
    assert code == 0, out
    s = json.loads(out)
    assert s["records"] == 8 and s["documents"]["train"] == 8
    assert s["licence"]["keptByLicence"] == {"CC-BY-4.0": 6, "CC0-1.0": 1, "MIT": 1}
    assert shards.read_manifest(str(tmp_path / "out")).splits["train"].documents == 8


@pytest.mark.parametrize(
    "case, expect",
    [
        ("missing", "spec.sources[0].uri: no files match"),
        ("corrupt-gzip", "cannot decompress"),
        ("corrupt-parquet", "not a readable Parquet file"),
        ("corrupt-zstd", "bad.jsonl.zst: cannot decompress"),
        ("truncated-gzip", "cut.jsonl.gz: cannot decompress"),
        ("latin-1-text", "latin.txt: not UTF-8 text"),
        ("parquet-no-text", "textField 'text' is not a column (found ['body'])"),
        ("unknown-language", "spec.filters.language.languages: unknown code(s) xq"),
        ("no-licence", "spec.sources[0].licence: Field required"),
        ("malformed", "spec.maxErrorRate: 3 of 5 records are malformed"),
        ("policy", "spec.allowedLicences: no licence is allowed by the operator's policy"),
        ("tokenizer", "spec.tokenizer.uri: no such file"),
        ("bad-field", "spec.filters.c4.minSentence: unknown field"),
    ],
)
def test_bad_input_exits_3_naming_the_problem(case, expect, tmp_path, capsys, monkeypatch):
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"text": "A fine document about the river and the town."}) + "\n")
    src = {"uri": local(good), "licence": "CC-BY-4.0"}
    res = resource([src], tmp_path / "out")
    if case == "missing":
        src["uri"] = local(tmp_path / "nothing-here" / "*.jsonl")
    elif case == "corrupt-gzip":
        (tmp_path / "bad.jsonl.gz").write_bytes(b"not gzip at all")
        src["uri"] = local(tmp_path / "bad.jsonl.gz")
    elif case == "corrupt-parquet":
        (tmp_path / "bad.parquet").write_bytes(b"PAR1 but not really")
        src.update(uri=local(tmp_path / "bad.parquet"), format="parquet")
    elif case == "corrupt-zstd":
        data = zstandard.ZstdCompressor().compress(good.read_bytes() * 50)
        (tmp_path / "bad.jsonl.zst").write_bytes(data[:20] + b"\x00garbage" + data[20:])
        src["uri"] = local(tmp_path / "bad.jsonl.zst")
    elif case == "truncated-gzip":
        (tmp_path / "cut.jsonl.gz").write_bytes(gzip.compress(good.read_bytes() * 50)[:-12])
        src["uri"] = local(tmp_path / "cut.jsonl.gz")
    elif case == "latin-1-text":
        (tmp_path / "latin.txt").write_bytes("Un caf\u00e9 tr\u00e8s fran\u00e7ais.".encode("latin-1"))
        src.update(uri=local(tmp_path / "latin.txt"), format="text")
    elif case == "parquet-no-text":
        pq.write_table(pa.table({"body": ["some text"]}), tmp_path / "nt.parquet")
        src.update(uri=local(tmp_path / "nt.parquet"), format="parquet")
    elif case == "unknown-language":
        res["spec"]["filters"]["language"] = {"enabled": True, "languages": ["en", "xq"]}
    elif case == "no-licence":
        del src["licence"]
    elif case == "malformed":
        good.write_text(
            "\n".join(
                [
                    '{"text": "one fine line of text."}',
                    "{oops",
                    '{"text": 1}',
                    "[]",
                    '{"text": "two fine lines of text."}',
                ]
            )
            + "\n"
        )
        res["spec"]["maxErrorRate"] = 0.5
    elif case == "policy":
        monkeypatch.setenv("CAPSTAN_ALLOWED_LICENCES", "CC0-1.0")
        res["spec"]["allowedLicences"] = ["CC-BY-4.0"]
    elif case == "tokenizer":
        res["spec"]["tokenizer"] = {"uri": local(tmp_path / "missing-tokenizer.json")}
    elif case == "bad-field":
        res["spec"]["filters"]["c4"] = {"minSentence": 3}
    code, err = run(tmp_path, res, capsys)
    assert code == 3
    assert expect in err


def test_malformed_lines_under_the_cap_are_counted_and_skipped(tmp_path, capsys):
    lines = [json.dumps({"text": f"Line {i} of a good document."}) for i in range(9)] + ["{broken"]
    (tmp_path / "d.jsonl").write_text("\n".join(lines) + "\n")
    res = resource(
        [{"uri": local(tmp_path / "d.jsonl"), "licence": "MIT"}], tmp_path / "out", maxErrorRate=0.1
    )
    code, out = run(tmp_path, res, capsys)
    assert code == 0, out
    s = json.loads(out)
    assert (s["records"], s["malformed"], s["documents"]["train"]) == (10, 1, 9)


def test_given_tokenizer_is_used_and_copied(tmp_path, capsys):
    (tmp_path / "d.jsonl").write_text(
        "".join(json.dumps({"text": f"Text {i} here."}) + "\n" for i in range(5))
    )
    src = [{"uri": local(tmp_path / "d.jsonl"), "licence": "MIT"}]
    assert run(tmp_path, resource(src, tmp_path / "a"), capsys)[0] == 0
    res = resource(src, tmp_path / "b")
    res["spec"]["tokenizer"] = {"uri": local(tmp_path / "a" / "tokenizer.json")}
    code, out = run(tmp_path, res, capsys)
    assert code == 0, out
    assert (tmp_path / "a" / "tokenizer.json").read_bytes() == (
        tmp_path / "b" / "tokenizer.json"
    ).read_bytes()
    assert (tmp_path / "a" / "train-00000.bin").read_bytes() == (
        tmp_path / "b" / "train-00000.bin"
    ).read_bytes()


def spec_error(spec: dict) -> str:
    base = {"sources": [{"uri": "s3://b/x", "licence": "MIT"}], "output": {"uri": "s3://b/out"}}
    obj = {
        "apiVersion": "capstan.dev/v1alpha1",
        "kind": "Dataset",
        "metadata": {"name": "x"},
        "spec": {**base, **spec},
    }
    with pytest.raises(InvalidResource) as exc:
        parse_spec(DatasetSpec, obj, "Dataset")
    return str(exc.value)


def test_spec_defaults_and_cross_field_rules():
    obj = {
        "apiVersion": "capstan.dev/v1alpha1",
        "kind": "Dataset",
        "metadata": {"name": "x"},
        "spec": {"sources": [{"uri": "s3://b/x", "licence": "MIT"}], "output": {"uri": "s3://b/out"}},
    }
    spec = parse_spec(DatasetSpec, obj, "Dataset")
    assert (spec.dedup.near.bands, spec.dedup.near.rows, spec.dedup.near.ngram) == (14, 8, 5)
    assert spec.filters.gopher_quality.min_words == 50 and spec.tokenizer.vocab_size == 32000
    assert "spec.filters.length: Value error, minChars must not exceed maxChars" in spec_error(
        {"filters": {"length": {"minChars": 10, "maxChars": 5}}}
    )
    assert "bands x rows must not exceed 1024" in spec_error({"dedup": {"near": {"bands": 64, "rows": 32}}})
    assert "vocabSize must hold the 256 byte tokens" in spec_error({"tokenizer": {"vocabSize": 258}})
    assert "bos, eos and pad must differ" in spec_error(
        {"tokenizer": {"specialTokens": {"bos": "<e>", "eos": "<e>"}}}
    )
    assert "pattern does not compile" in spec_error({"pii": {"extra": [{"name": "ID", "pattern": "(["}]}})
    assert "extra pattern names must be unique" in spec_error(
        {"pii": {"extra": [{"name": "ID", "pattern": "a"}, {"name": "ID", "pattern": "b"}]}}
    )
    assert "spec.output.validationFraction" in spec_error(
        {"output": {"uri": "s3://b/x", "validationFraction": 1}}
    )
    assert "spec.sources: List should have at least 1 item" in spec_error({"sources": []})
    schema = json.dumps(DatasetSpec.model_json_schema(by_alias=True))
    assert "self.minChars <= self.maxChars" in schema and "x-kubernetes-validations" in schema


def test_example_resource_is_valid():
    from capstan_api.resource import load_resource

    root = Path(__file__).resolve().parents[3]
    _, spec = load_resource(root / "manifests/examples/dataset.yaml", DatasetSpec, "Dataset")
    assert spec.sources[0].licence in spec.allowed_licences
    assert len(list((root / "manifests/examples/corpus").glob("*.jsonl"))) == 3  # stories x2, gazetteer
