"""End-to-end preparation on a generated corpus whose defects are all known."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from tokenizers import Tokenizer

from capstan_api import preparation
from capstan_api.dataset import DatasetSpec
from capstan_api.drift import PromptStats, bucket_of
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


def test_manifest_counts_tokens_per_source_and_domain(prepared):
    """The figures the training-data summary is filled from: every output token is attributed to
    its spec source (with the declared type) and, the corpus's documents all having a URL on
    example.org, to that domain."""
    tmp, s = prepared
    total = s["tokens"]["train"] + s["tokens"]["validation"]
    main, restricted = s["sources"]
    assert (main["type"], main["licence"], main["tokens"]) == ("scraped", "CC-BY-4.0", total)
    assert (restricted["type"], restricted["tokens"]) == ("other", 0)  # its licence is not allowed
    assert s["domains"] == {"tokensWithUrl": total, "top": {"example.org": total}}
    assert shards.read_manifest(f"file://{tmp}/out").stats["sources"] == s["sources"]


def test_manifest_holds_the_validation_splits_drift_statistics(prepared):
    """What a Deployment's drift score compares live prompts with: every validation document's
    length (without its end-of-text) and its tokens that are base bytes of the BPE."""
    tmp, s = prepared
    m, tok, texts = decoded_texts(f"file://{tmp}/out")
    p = PromptStats.model_validate(s["promptStats"])
    assert p.texts == s["documents"]["validation"] == len(texts["validation"])
    assert p.tokens == s["tokens"]["validation"] - p.texts
    vocab = tok.get_vocab(with_added_tokens=False)
    ids = [tok.encode(t, add_special_tokens=False).ids for t in texts["validation"]]
    single = {i for t, i in vocab.items() if len(t) == 1}
    assert p.byte_fallback_tokens == sum(1 for d in ids for i in d if i in single)
    assert p.length_counts == [
        sum(1 for d in ids if bucket_of(len(d)) == b) for b in range(len(p.length_counts))
    ]


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


def output_files(out: Path) -> dict[str, bytes]:
    """Every file of an output folder but the intermediate _work/ folder."""
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}


def assert_same_output(a: Path, b: Path) -> None:
    fa, fb = output_files(a), output_files(b)
    assert sorted(fb) == sorted(fa)
    for name in fa:
        assert fb[name] == fa[name], f"{b.name}/{name} differs from {a.name}/{name}"


def run_stages(path: str, workers: int) -> None:
    """What the operator's Indexed Jobs do: every index of every stage, one call each."""
    res = yaml.safe_load(Path(path).read_text())
    spec = DatasetSpec.model_validate({**res["spec"], "workers": workers})
    for stage in preparation.plan(spec):
        for i in range(stage.workers):
            assert (
                main(["-f", path, "--stage", stage.name, "--workers", str(workers), "--index", str(i)]) == 0
            )


def test_byte_identical_for_1_2_and_3_workers(prepared, tmp_path, capsys):
    first, _ = prepared
    a = first / "out"
    src = str(first / "in")
    names = sorted(output_files(a))
    assert "manifest.json" in names and "train-00000.bin" in names and "documents.jsonl" in names
    # the same spec again in one process, 3 worker processes, and 2 workers stage by stage
    for how in ("again", "processes-3", "stages-2"):
        out = tmp_path / f"out-{how}"
        path = _write(tmp_path, corpus.spec(src, str(out)), f"ds-{how}.yaml")
        if how == "again":
            assert main(["-f", path]) == 0
        elif how == "processes-3":
            assert main(["-f", path, "--workers", "3"]) == 0
        else:
            run_stages(path, 2)
        assert_same_output(a, out)
        # the bulky intermediates are gone; the markers stay
        work = sorted(p.name for p in (out / "_work").rglob("*") if p.is_file())
        assert work and all(n.startswith(("done-", "progress-")) for n in work), work
    capsys.readouterr()


def test_a_stage_before_its_input_exits_1_naming_it(prepared, tmp_path, capsys):
    first, _ = prepared
    path = _write(tmp_path, corpus.spec(str(first / "in"), str(tmp_path / "out")))
    assert main(["-f", path, "--stage", "map", "--workers", "2", "--index", "0"]) == 0
    assert main(["-f", path, "--stage", "dedup", "--workers", "2", "--index", "0"]) == 1
    assert "stage map index 1 has not committed" in capsys.readouterr().err
    assert main(["-f", path, "--stage", "map", "--workers", "2", "--index", "2"]) == 3
    assert "--index 2 must be in [0, 2) for stage map" in capsys.readouterr().err


def test_a_map_worker_killed_mid_stage_is_retried_to_the_same_output(tmp_path, capsys):
    from bench.prepare_common import write_corpus

    write_corpus(tmp_path / "in", megabytes=6)
    res = corpus.spec(str(tmp_path / "in"), "")
    res["spec"]["sources"] = [{"uri": f"file://{tmp_path}/in/*.jsonl", "licence": "CC-BY-4.0"}]
    ref = tmp_path / "ref"
    assert (
        main(
            [
                "-f",
                _write(
                    tmp_path,
                    {
                        **res,
                        "spec": {**res["spec"], "output": {**res["spec"]["output"], "uri": f"file://{ref}"}},
                    },
                    "ref.yaml",
                ),
            ]
        )
        == 0
    )
    out = tmp_path / "out"
    path = _write(
        tmp_path,
        {**res, "spec": {**res["spec"], "output": {**res["spec"]["output"], "uri": f"file://{out}"}}},
    )
    cmd = [sys.executable, "-m", "capstan_trainer.prepare", "-f", path, "--stage", "map", "--workers", "2"]
    proc = subprocess.Popen(cmd, env={**os.environ, "JOB_COMPLETION_INDEX": "0"}, stderr=subprocess.PIPE)
    progress = out / "_work" / "map" / "progress-00000.json"
    deadline = time.monotonic() + 60
    while not progress.exists():  # the worker has started on its files
        assert proc.poll() is None, f"map worker 0 ended before it could be killed: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "map worker 0 wrote no progress file within 60 s"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert not (out / "_work" / "map" / "done-00000.json").exists(), "killed before its commit"
    assert not (out / "_work" / "map" / "docs-00000.jsonl.zst").exists(), "no half-written part"
    run_stages(path, 2)  # the retry of index 0, then everything else
    capsys.readouterr()
    assert_same_output(ref, out)


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
