"""A generated corpus whose every defect is known: the tests check the pipeline finds exactly these.

Text is made from pseudo-words (syllable strings) in English sentence frames, so documents pass
the quality filters and share no 5-grams by accident. Used by the tests, the benchmarks and the
demo corpus generator.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field

SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "ner",
    "sta",
    "vin",
    "dor",
    "pel",
    "ru",
    "tha",
    "gos",
    "bre",
    "fen",
    "qui",
    "zar",
    "lum",
    "tor",
    "es",
    "an",
    "ol",
    "mar",
    "cen",
    "dri",
    "hal",
    "jun",
    "pra",
    "sel",
    "vok",
    "wen",
    "yor",
]
FRAMES = [
    "The {a} {n} of the {n} {v} with the {n} and the {n}.",
    "In the {n} of {n}, a {a} {n} {v} to the {n}.",
    "Every {n} that {v} the {a} {n} will have to {v} with {n}.",
    "It is {a} to {v} the {n} of the {n} and the {a} {n}.",
    "After the {n}, the {n} {v} that the {n} was {a}.",
    "Some {n} and {n} {v} the {a} {n} of the old {n}.",
]

# PII of every type the pipeline knows; each string is one redaction of its type.
PII = {
    "EMAIL": ["jane.doe@example.com", "ops-team+alerts@mail.capstan.dev"],
    "IP_ADDRESS": ["93.184.216.34", "2606:4700:4700::1111"],
    "PHONE": [
        "+44 20 7946 0958",
        "+1 (415) 555-0132",
        "(212) 555-0187",
        "+4915123456789",
        "212-555-0199",
        "030 1234 5678",
    ],
    "CREDIT_CARD": ["4111 1111 1111 1111", "5500-0000-0000-0004"],
}


def words(rng: random.Random, n: int, parts: tuple[int, int] = (2, 3)) -> list[str]:
    return ["".join(rng.choice(SYLLABLES) for _ in range(rng.randint(*parts))) for _ in range(n)]


def sentence(rng: random.Random) -> str:
    frame = rng.choice(FRAMES)
    return re.sub(r"\{(\w)\}", lambda m: words(rng, 1)[0] + ("ed" if m.group(1) == "v" else ""), frame)


def good_doc(rng: random.Random, lines: int = 8) -> str:
    """A document that passes every default filter: ~8 lines of 2-3 sentences."""
    out = [" ".join(sentence(rng) for _ in range(rng.randint(2, 3))) for _ in range(lines)]
    return "\n".join(out)


def jaccard(a: str, b: str, n: int = 5) -> float:
    def grams(t: str) -> set[tuple[str, ...]]:
        w = re.findall(r"\w+", t.lower())
        return {tuple(w[i : i + n]) for i in range(len(w) - n + 1)}

    ga, gb = grams(a), grams(b)
    return len(ga & gb) / len(ga | gb)


def near_copy(rng: random.Random, text: str, target: float) -> str:
    """Replace words, one at a time at random places, until the 5-gram Jaccard drops to `target`."""
    toks = text.split(" ")
    while True:
        i = rng.randrange(len(toks))
        m = re.fullmatch(r"(\w+)([.,]?)", toks[i])
        if not m:
            continue
        toks[i] = words(rng, 1)[0] + m.group(2)
        cand = " ".join(toks)
        if jaccard(text, cand) <= target:
            return cand


@dataclass
class Corpus:
    """Records per file, and the numbers a correct pipeline must report."""

    files: dict[str, list[str]] = field(default_factory=dict)  # name -> raw lines
    expect: dict = field(default_factory=dict)
    pii_strings: list[str] = field(default_factory=list)


@dataclass
class _Draft:
    """main/'s records as they are generated, and what a correct pipeline must count in them."""

    rng: random.Random
    records: list[dict] = field(default_factory=list)
    expect: dict = field(
        default_factory=lambda: {
            "exact": 0,
            "near": 0,
            "rules": {},
            "excluded": {},
            "malformed": 0,
            "normalised": 0,
            "pii": {},
        }
    )
    kept: int = 0
    pii_strings: list[str] = field(default_factory=list)

    def add(self, text: str, **extra) -> None:
        self.records.append({"text": text, "url": f"https://example.org/{len(self.records)}", **extra})

    def rule(self, name: str) -> None:
        self.expect["rules"][name] = self.expect["rules"].get(name, 0) + 1


def build(seed: int = 7, good: int = 40) -> Corpus:
    # Each step draws from one generator in turn, so their order fixes the corpus.
    d = _Draft(random.Random(seed))
    _good_and_duplicates(d, good)
    _pii(d)
    _mojibake(d)
    _low_quality(d)
    _licence_overrides(d)
    return _files(d)


def _good_and_duplicates(d: _Draft, good: int) -> None:
    bases = [good_doc(d.rng) for _ in range(good)]
    for t in bases:
        d.add(t)
    d.kept += good
    # exact duplicates: verbatim, and with whitespace that normalisation removes
    for i in range(4):
        d.add(bases[i])
        d.expect["exact"] += 1
    for i in range(4, 7):
        d.add(bases[i].replace(". ", ".   ", 2) + "  \n")
        d.expect["exact"] += 1
        d.expect["normalised"] += 1
    # near duplicates at chosen Jaccard levels: removed at >= 0.9 / 0.8, kept at 0.3
    for i, level in zip(range(7, 13), (0.95, 0.95, 0.9, 0.9, 0.85, 0.85), strict=True):
        d.add(near_copy(d.rng, bases[i], level))
        d.expect["near"] += 1
    for i in range(13, 17):
        d.add(near_copy(d.rng, bases[i], 0.3))
        d.kept += 1


def _pii(d: _Draft) -> None:
    # PII of every type, inside otherwise good documents
    for typ, values in PII.items():
        for v in values:
            doc = good_doc(d.rng).split("\n")
            doc.insert(3, f"For the {words(d.rng, 1)[0]} of the record, write to the desk at {v} today.")
            d.add("\n".join(doc))
            d.expect["pii"][typ] = d.expect["pii"].get(typ, 0) + 1
            d.pii_strings.append(v)
            d.kept += 1
    # not PII: private addresses, a number failing the Luhn check, a date
    doc = good_doc(d.rng).split("\n")
    doc.insert(
        2,
        "The lab router at 192.168.1.1 and card 4111 1111 1111 1112 were logged on 2026-11-28 in 1999 2000 2001.",
    )
    d.add("\n".join(doc))
    d.kept += 1


def _mojibake(d: _Draft) -> None:
    # mojibake that normalisation repairs
    d.add(good_doc(d.rng).replace("The ", "Theâ€™s ", 1))
    d.expect["normalised"] += 1
    d.kept += 1


def _low_quality(d: _Draft) -> None:
    """Documents each filter family removes, one family at a time."""
    rng = d.rng
    for _ in range(3):
        d.add("Too short to keep.")
        d.rule("length.minChars")
    for _ in range(2):
        line = sentence(rng) + " " + sentence(rng)
        d.add("\n".join([line] * 6 + [sentence(rng)] * 2))
        d.rule("gopherRepetition.duplicateLines")
    for _ in range(2):
        d.add(" ".join(sentence(rng) for _ in range(3)))  # < 40 words
        d.rule("gopherQuality.minWords")
    for _ in range(2):
        # English frames (pure pseudo-words would be dropped earlier, as an unknown language)
        d.add(" ".join(sentence(rng) + " ##" for _ in range(12)))
        d.rule("gopherQuality.symbolWordRatio")
    d.add(good_doc(rng) + "\nLorem ipsum dolor sit amet, consectetur adipiscing elit.")
    d.rule("c4.loremIpsum")
    d.add(good_doc(rng) + "\nThe config {value: one} is shown here for the reader.")
    d.rule("c4.curlyBrackets")
    for _ in range(2):
        d.add("\n".join(sentence(rng).rstrip(".") + " and " + sentence(rng).rstrip(".") for _ in range(8)))
        d.rule("fineweb.punctuatedLines")


def _licence_overrides(d: _Draft) -> None:
    # documents overriding the source licence, allowed and not
    for _ in range(3):
        d.add(good_doc(d.rng), licence="CC-BY-NC-4.0")
        d.expect["excluded"]["CC-BY-NC-4.0"] = d.expect["excluded"].get("CC-BY-NC-4.0", 0) + 1
    d.add(good_doc(d.rng), licence="CC0-1.0")
    d.kept += 1


def _files(d: _Draft) -> Corpus:
    """main/ in two files with malformed records among them, and a source whose licence is not allowed."""
    c, expect = Corpus(pii_strings=d.pii_strings), d.expect
    lines = [json.dumps(r) for r in d.records]
    # malformed records: bad JSON, no text field, text not a string
    lines[5:5] = ['{"text": "unterminated', '{"body": "no text field"}', '{"text": 42}', "[1, 2]"]
    expect["malformed"] = 4
    c.files["main/part-000.jsonl"] = lines[: len(lines) // 2]
    c.files["main/part-001.jsonl"] = lines[len(lines) // 2 :]
    c.files["restricted/data.jsonl"] = [json.dumps({"text": good_doc(d.rng)}) for _ in range(5)]
    expect["excluded"]["LicenseRef-Proprietary"] = 5
    expect["kept"] = d.kept
    expect["records"] = len(lines) + 5
    c.expect = expect
    return c


def write(c: Corpus, root) -> None:
    """Write the files under `root` (a pathlib.Path)."""
    for name, lines in c.files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("\n".join(lines) + "\n")


def spec(source_root: str, output: str, **overrides) -> dict:
    """A Dataset resource over a corpus written by `write`: main/ under CC-BY-4.0, restricted/ not allowed.
    Local paths become file:// URIs (the spec requires a scheme)."""
    source_root, output = (u if "://" in u else f"file://{u}" for u in (source_root, output))
    s = {
        "sources": [
            {
                "uri": f"{source_root}/main/*.jsonl",
                "licence": "CC-BY-4.0",
                "provenance": {"description": "generated by the Capstan tests", "type": "scraped"},
            },
            {"uri": f"{source_root}/restricted", "licence": "LicenseRef-Proprietary"},
        ],
        "filters": {"length": {"minChars": 100}},
        "tokenizer": {"vocabSize": 400},
        "output": {"uri": output, "shardTokens": 4000, "validationFraction": 0.1},
        "maxErrorRate": 0.05,
    }
    for k, v in overrides.items():
        s[k] = v
    return {"apiVersion": "capstan.dev/v1alpha1", "kind": "Dataset", "metadata": {"name": "test"}, "spec": s}
