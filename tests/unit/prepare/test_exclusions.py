"""spec.exclusions: the documents asked to be removed leave the output, counted per rule."""

from __future__ import annotations

import contextlib
import fnmatch
import io
import json
import re
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from capstan_api import exitcodes
from capstan_api.dataset import DatasetSpec
from capstan_trainer.prepare.exclusions import EXCLUDED_FILE
from capstan_trainer.prepare.prepare import main
from tests.unit.prepare import corpus

EMAIL = r"jane\.doe@example\.com"  # planted PII: the regex sees the raw text, before redaction
GLOB = "https://example.org/2?"
COPY_OF_2 = "https://example.org/42"  # the corpus's verbatim copy of document 2 (bases[2])


def _prepare(tmp: Path, resource: dict, name: str) -> int:
    (tmp / name).write_text(yaml.safe_dump(resource))
    with contextlib.redirect_stdout(io.StringIO()):
        return main(["-f", str(tmp / name)])


def _docs(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "documents.jsonl").read_text().splitlines()]


def _records(c: corpus.Corpus) -> list[dict]:
    out = []
    for lines in c.files.values():
        for line in lines:
            with contextlib.suppress(json.JSONDecodeError):
                out.append(json.loads(line))
    return [r for r in out if isinstance(r, dict) and isinstance(r.get("text"), str)]


@pytest.fixture(scope="module")
def before_after(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("excl")
    c = corpus.build()
    corpus.write(c, tmp / "in")
    assert _prepare(tmp, corpus.spec(str(tmp / "in"), str(tmp / "before")), "a.yaml") == 0
    before = _docs(tmp / "before")
    (tmp / "list.yaml").write_text(yaml.safe_dump({"patterns": [EMAIL]}))
    rules = {
        "documentIds": [before[0]["id"]],
        "urls": [before[1]["url"], GLOB, COPY_OF_2],
        "uri": f"file://{tmp}/list.yaml",
    }
    spec = corpus.spec(str(tmp / "in"), str(tmp / "after"), exclusions=rules)
    assert _prepare(tmp, spec, "b.yaml") == 0
    return c, tmp, before, _docs(tmp / "after")


def test_removed_documents_leave_the_output_and_the_rest_stay(before_after):
    c, tmp, before, after = before_after
    records = _records(c)
    email_urls = {r.get("url", "") for r in records if re.search(EMAIL, r["text"])}
    assert email_urls, "the corpus plants the e-mail address"
    gone = {before[0]["url"], before[1]["url"], *email_urls}
    gone |= {r.get("url", "") for r in records if fnmatch.fnmatchcase(r.get("url", ""), GLOB)}
    # Removing a copy removes the document it duplicates: dedup kept that one for both.
    gone |= {COPY_OF_2, "https://example.org/2"}
    assert not gone & {d["url"] for d in after}
    # Nothing else changes, and no duplicate of a removed document comes back in its place.
    assert [d["id"] for d in after] == [d["id"] for d in before if d["url"] not in gone]


def test_status_counts_each_rule_and_the_record_lists_every_removed_document(before_after):
    c, tmp, before, _ = before_after
    manifest = json.loads((tmp / "after" / "manifest.json").read_text())
    records = _records(c)
    first_two = {before[0]["url"], before[1]["url"]}
    globbed = [r for r in records if fnmatch.fnmatchcase(r.get("url", ""), GLOB)]
    mailed = [
        r
        for r in records
        if re.search(EMAIL, r["text"]) and r.get("url", "") not in first_two and r not in globbed
    ]
    listed = f"spec.exclusions.uri(file://{tmp}/list.yaml).patterns[0]"
    ex = manifest["stats"]["exclusions"]
    assert ex["byRule"] == {
        "spec.exclusions.documentIds[0]": 1,
        "spec.exclusions.urls[0]": 1,
        "spec.exclusions.urls[1]": len(globbed),
        "spec.exclusions.urls[2]": 1,
        listed: len(mailed),
    }
    assert ex["removed"] == 3 + len(globbed) + len(mailed) and ex["copies"] == 1
    steps = {s["stage"]: (s["in"], s["out"]) for s in manifest["stats"]["stages"]}
    assert steps["exclusions"][0] - steps["exclusions"][1] == ex["removed"]
    assert steps["copiesOfRemoved"][0] - steps["copiesOfRemoved"][1] == 1
    removed = [json.loads(x) for x in (tmp / "after" / EXCLUDED_FILE).read_text().splitlines()]
    assert len(removed) == ex["removed"] + 1 and [r["id"] for r in removed] == sorted(
        r["id"] for r in removed
    )
    assert {"id": 2, "url": "", "rule": "copy of a removed document"} in removed
    assert removed[0] == {
        "id": before[0]["id"],
        "url": before[0]["url"],
        "rule": "spec.exclusions.documentIds[0]",
    }
    sheet = (tmp / "after" / "datasheet.md").read_text()
    assert f"Removal requests (spec.exclusions): {ex['removed']} documents removed" in sheet
    assert "jane" not in sheet, "the datasheet names rules by place, not by the personal data"
    assert not (tmp / "before" / EXCLUDED_FILE).exists()
    assert "exclusions" not in {
        s["stage"] for s in json.loads((tmp / "before" / "manifest.json").read_text())["stats"]["stages"]
    }


def test_a_bad_regex_is_refused_naming_the_rule():
    with pytest.raises(ValidationError, match=r"patterns\[1\]"):
        DatasetSpec.model_validate(
            {"sources": [{"uri": "file:///x", "licence": "MIT"}], "output": {"uri": "file:///o"},
             "exclusions": {"patterns": ["ok", "(unclosed"]}}
        )  # fmt: skip


def test_a_missing_or_malformed_list_file_exits_3_naming_the_field(tmp_path, capsys):
    c = corpus.build()
    corpus.write(c, tmp_path / "in")
    spec = corpus.spec(
        str(tmp_path / "in"), str(tmp_path / "o"), exclusions={"uri": f"file://{tmp_path}/none.json"}
    )
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(spec))
    assert (
        main(["-f", str(tmp_path / "a.yaml"), "--stage", "map", "--index", "0"]) == exitcodes.INVALID_CONFIG
    )
    assert "spec.exclusions.uri" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text(json.dumps({"urls": "not a list"}))
    spec["spec"]["exclusions"]["uri"] = f"file://{tmp_path}/bad.json"
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(spec))
    assert (
        main(["-f", str(tmp_path / "a.yaml"), "--stage", "map", "--index", "0"]) == exitcodes.INVALID_CONFIG
    )
    assert "spec.exclusions.uri.urls" in capsys.readouterr().err
