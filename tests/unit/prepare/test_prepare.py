"""End-to-end preparation on a generated corpus whose defects are all known."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from tokenizers import Tokenizer

from capstan_trainer import shards, storage
from capstan_trainer.prepare.prepare import main
from tests.unit.prepare import corpus


def run(tmp: Path, resource: dict, *args: str, capsys=None, name: str = "ds.yaml") -> tuple[int, dict | str]:
    path = tmp / name
    path.write_text(yaml.safe_dump(resource))
    code = main(["-f", str(path), *args])
    if capsys is None:
        return code, ""
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else err)


@pytest.fixture(scope="module")
def generated() -> corpus.Corpus:
    return corpus.build()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, generated):
    """One run over the corpus on local files: (output folder, summary)."""
    import contextlib
    import io

    tmp = tmp_path_factory.mktemp("prep")
    corpus.write(generated, tmp / "in")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["-f", _write(tmp, corpus.spec(str(tmp / "in"), str(tmp / "out")))])
    assert code == 0
    return tmp, json.loads(buf.getvalue())


def _write(tmp: Path, resource: dict, name: str = "ds.yaml") -> str:
    (tmp / name).write_text(yaml.safe_dump(resource))
    return str(tmp / name)


def decoded_texts(folder: str) -> tuple[shards.Manifest, Tokenizer, dict[str, list[str]]]:
    m = shards.read_manifest(folder)
    tok = Tokenizer.from_str(storage.read_bytes(storage.join(folder, m.tokenizer["path"])).decode())
    texts = {}
    for name, split in m.splits.items():
        ids = np.concatenate(
            [
                shards.decode_shard(storage.read_bytes(storage.join(folder, s.path)), m.dtype)
                for s in split.shards
            ]
            or [np.zeros(0, np.uint16)]
        )
        docs, start = [], 0
        for end in np.flatnonzero(ids == m.eos_id).tolist():
            docs.append(tok.decode(ids[start:end].tolist(), skip_special_tokens=False))
            start = end + 1
        assert start == len(ids), "every document ends with end-of-text"
        texts[name] = docs
    return m, tok, texts


def test_counts_are_exactly_the_planted_ones(prepared, generated):
    _, s = prepared
    e = generated.expect
    assert s["records"] == e["records"]
    assert s["malformed"] == e["malformed"]
    assert s["licence"]["excludedByLicence"] == e["excluded"]
    assert s["filters"]["byRule"] == e["rules"]
    assert s["exactDuplicates"] == e["exact"]
    assert s["nearDuplicates"] == e["near"]
    assert s["pii"] == e["pii"]
    assert s["normalised"] == e["normalised"]
    assert s["documents"]["train"] + s["documents"]["validation"] == e["kept"]
    assert s["documents"]["validation"] > 0
    stages = {x["stage"]: (x["in"], x["out"]) for x in s["stages"]}
    assert stages["nearDedup"][1] == e["kept"]
    assert stages["read"] == (e["records"], e["records"] - e["malformed"])


def test_shards_read_back_and_hold_no_pii(prepared, generated):
    tmp, s = prepared
    out = str(tmp / "out")
    m, tok, texts = decoded_texts(out)
    assert m.vocab_size == 400 and m.dtype == "uint16"
    assert m.eos_id == tok.token_to_id("<|end_of_text|>")
    assert m.tokenizer["sha256"] == hashlib.sha256((tmp / "out" / "tokenizer.json").read_bytes()).hexdigest()
    for name, split in m.splits.items():
        assert split.documents == len(texts[name]) == s["documents"][name]
        assert split.tokens == s["tokens"][name]
        for sh in split.shards:
            data = (tmp / "out" / sh.path).read_bytes()
            assert hashlib.sha256(data).hexdigest() == sh.sha256
            assert len(data) == sh.tokens * 2
            assert sh.tokens <= 4000
    everything = "\n".join(texts["train"] + texts["validation"])
    for secret in generated.pii_strings:
        assert secret not in everything
    for typ, n in generated.expect["pii"].items():
        assert everything.count(f"<{typ}>") == n
    # not PII, so kept: private address, a Luhn-invalid number, a date
    assert "192.168.1.1" in everything and "4111 1111 1111 1112" in everything and "2026-11-28" in everything
    assert "The’s" in everything  # mojibake repaired
    assert m.stats["exactDuplicates"] == s["exactDuplicates"] and m.fingerprint
    sheet = (tmp / "out" / "datasheet.md").read_text()
    for section in (
        "## Motivation",
        "## Composition",
        "## Collection process",
        "## Preprocessing",
        "## Uses",
        "## Distribution",
        "## Maintenance",
    ):
        assert section in sheet
    assert "| CC-BY-NC-4.0 | 3 |" in sheet and "| c4.loremIpsum | 1 |" in sheet
    cfg = json.loads((tmp / "out" / "tokenizer_config.json").read_text())
    assert cfg["eos_token"] == "<|end_of_text|>" and "add_generation_prompt" in cfg["chat_template"]
    docs = [json.loads(x) for x in (tmp / "out" / "documents.jsonl").read_text().splitlines()]
    assert len(docs) == generated.expect["kept"]
    assert sum(d["tokens"] for d in docs if d["split"] == "train") == s["tokens"]["train"]


def test_byte_identical_across_runs_and_shard_counts(prepared, tmp_path, capsys):
    first, _ = prepared
    a = first / "out"
    src = str(first / "in")
    outputs = [a]
    # the same spec again, and map shards (3 and 2) followed by a merge
    for count in (1, 3, 2):
        out = tmp_path / f"out-{count}"
        path = _write(tmp_path, corpus.spec(src, str(out)), f"ds-{count}.yaml")
        if count == 1:
            assert main(["-f", path]) == 0
        else:
            for i in range(count):
                assert main(["-f", path, "--shard-index", str(i), "--shard-count", str(count)]) == 0
            assert (out / "_parts").is_dir()
            assert main(["-f", path, "--merge", "--shard-count", str(count)]) == 0
            assert not (out / "_parts").exists()
        outputs.append(out)
    capsys.readouterr()
    names = sorted(p.name for p in a.iterdir())
    assert "manifest.json" in names and "train-00000.bin" in names
    for out in outputs[1:]:
        assert sorted(p.name for p in out.iterdir()) == names
        for n in names:
            assert (out / n).read_bytes() == (a / n).read_bytes(), f"{out.name}/{n} differs"


def test_merge_refuses_missing_part(prepared, tmp_path, capsys):
    first, _ = prepared
    path = _write(tmp_path, corpus.spec(str(first / "in"), str(tmp_path / "out")))
    assert main(["-f", path, "--shard-index", "0", "--shard-count", "2"]) == 0
    assert main(["-f", path, "--merge", "--shard-count", "2"]) == 1
    assert "part 1 of 2 is missing" in capsys.readouterr().err


def test_s3_in_and_out(s3_bucket, generated, tmp_path, capsys):
    for name, lines in generated.files.items():
        storage.write_bytes(f"{s3_bucket}/raw/{name}", ("\n".join(lines) + "\n").encode())
    out = f"{s3_bucket}/prepared/v1"
    code, s = run(tmp_path, corpus.spec(f"{s3_bucket}/raw", out), capsys=capsys)
    assert code == 0, s
    assert s["manifest"] == f"{out}/manifest.json"
    assert s["nearDuplicates"] == generated.expect["near"]
    m, _, texts = decoded_texts(out)
    assert len(texts["train"]) == s["documents"]["train"]
    assert storage.exists(f"{out}/datasheet.md") and storage.exists(f"{out}/tokenizer.json")
