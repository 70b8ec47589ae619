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


def build(seed: int = 7, good: int = 40) -> Corpus:
    rng = random.Random(seed)
    c = Corpus()
    main: list[dict] = []
    expect = {"exact": 0, "near": 0, "rules": {}, "excluded": {}, "malformed": 0, "normalised": 0, "pii": {}}

    def add(text: str, **extra) -> None:
        main.append({"text": text, "url": f"https://example.org/{len(main)}", **extra})

    def rule(name: str) -> None:
        expect["rules"][name] = expect["rules"].get(name, 0) + 1

    bases = [good_doc(rng) for _ in range(good)]
    for t in bases:
        add(t)
    kept = good
    # exact duplicates: verbatim, and with whitespace that normalisation removes
    for i in range(4):
        add(bases[i])
        expect["exact"] += 1
    for i in range(4, 7):
        add(bases[i].replace(". ", ".   ", 2) + "  \n")
        expect["exact"] += 1
        expect["normalised"] += 1
    # near duplicates at chosen Jaccard levels: removed at >= 0.9 / 0.8, kept at 0.3
    for i, level in zip(range(7, 13), (0.95, 0.95, 0.9, 0.9, 0.85, 0.85), strict=True):
        add(near_copy(rng, bases[i], level))
        expect["near"] += 1
    for i in range(13, 17):
        add(near_copy(rng, bases[i], 0.3))
        kept += 1
    # PII of every type, inside otherwise good documents
    for typ, values in PII.items():
        for v in values:
            doc = good_doc(rng).split("\n")
            doc.insert(3, f"For the {words(rng, 1)[0]} of the record, write to the desk at {v} today.")
            add("\n".join(doc))
            expect["pii"][typ] = expect["pii"].get(typ, 0) + 1
            c.pii_strings.append(v)
            kept += 1
    # not PII: private addresses, a number failing the Luhn check, a date
    doc = good_doc(rng).split("\n")
    doc.insert(
        2,
        "The lab router at 192.168.1.1 and card 4111 1111 1111 1112 were logged on 2026-11-28 in 1999 2000 2001.",
    )
    add("\n".join(doc))
    kept += 1
    # mojibake that normalisation repairs
    add(good_doc(rng).replace("The ", "Theâ€™s ", 1))
    expect["normalised"] += 1
    kept += 1
    # low quality, one family at a time
    for _ in range(3):
        add("Too short to keep.")
        rule("length.minChars")
    for _ in range(2):
        line = sentence(rng) + " " + sentence(rng)
        add("\n".join([line] * 6 + [sentence(rng)] * 2))
        rule("gopherRepetition.duplicateLines")
    for _ in range(2):
        add(" ".join(sentence(rng) for _ in range(3)))  # < 40 words
        rule("gopherQuality.minWords")
    for _ in range(2):
        add(" ".join(" ".join(words(rng, 6)) + " ##" for _ in range(12)))
        rule("gopherQuality.symbolWordRatio")
    add(good_doc(rng) + "\nLorem ipsum dolor sit amet, consectetur adipiscing elit.")
    rule("c4.loremIpsum")
    add(good_doc(rng) + "\nThe config {value: one} is shown here for the reader.")
    rule("c4.curlyBrackets")
    for _ in range(2):
        add("\n".join(sentence(rng).rstrip(".") + " and " + sentence(rng).rstrip(".") for _ in range(8)))
        rule("fineweb.punctuatedLines")
    # licences: documents overriding the source licence, allowed and not
    for _ in range(3):
        add(good_doc(rng), licence="CC-BY-NC-4.0")
        expect["excluded"]["CC-BY-NC-4.0"] = expect["excluded"].get("CC-BY-NC-4.0", 0) + 1
    add(good_doc(rng), licence="CC0-1.0")
    kept += 1
    lines = [json.dumps(d) for d in main]
    # malformed records: bad JSON, no text field, text not a string
    lines[5:5] = ['{"text": "unterminated', '{"body": "no text field"}', '{"text": 42}', "[1, 2]"]
    expect["malformed"] = 4
    c.files["main/part-000.jsonl"] = lines[: len(lines) // 2]
    c.files["main/part-001.jsonl"] = lines[len(lines) // 2 :]
    # a whole source under a licence outside the allow-list
    c.files["restricted/data.jsonl"] = [json.dumps({"text": good_doc(rng)}) for _ in range(5)]
    expect["excluded"]["LicenseRef-Proprietary"] = 5
    expect["kept"] = kept
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
    """A Dataset resource over a corpus written by `write`: main/ under CC-BY-4.0, restricted/ not allowed."""
    s = {
        "sources": [
            {
                "uri": f"{source_root}/main/*.jsonl",
                "licence": "CC-BY-4.0",
                "provenance": {"description": "generated by the Capstan tests"},
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
