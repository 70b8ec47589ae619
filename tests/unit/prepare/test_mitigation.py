"""The toxicity filter and counterfactual data augmentation: alone, then through a whole preparation."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

from capstan_api.mitigation import Counterfactual, ToxicityFilter
from capstan_trainer.prepare import counterfactual, datasheet, toxicity
from capstan_trainer.prepare.prepare import main
from capstan_trainer.prepare.read import InputError
from tests.unit.prepare import corpus
from tests.unit.prepare.test_prepare import decoded_texts


def swap(text: str) -> str:
    return counterfactual.load(Counterfactual(fraction=1)).swap(text)[0]


# ---- counterfactual swaps


def test_pairs_swap_both_ways_whole_words_only():
    assert swap("the man and the woman") == "the woman and the man"
    assert swap("his father met her brother") == "her mother met his sister"
    # words that contain a paired term are left alone
    assert (
        swap("Shed the theme; management hemmed the shelf.") == "Shed the theme; management hemmed the shelf."
    )
    assert swap("Mrs Smith and Mr Jones") == "Mr Smith and Mrs Jones"
    assert swap("himself, herself") == "herself, himself"


def test_case_is_kept():
    assert swap("He, he and HE") == "She, she and SHE"
    assert swap("KING Kings king") == "QUEEN Queens queen"


def test_her_and_his_are_decided_by_the_next_word():
    assert swap("I gave her the book.") == "I gave him the book."  # object
    assert swap("I took her book.") == "I took his book."  # determiner
    assert swap("The book is his.") == "The book is hers."
    assert swap("His car and hers") == "Her car and his"
    assert swap("She told him that her own car was his to keep") == (
        "He told her that his own car was hers to keep"
    )


def test_swap_counts_replacements():
    s = counterfactual.load(Counterfactual(fraction=1))
    assert s.swap("He met his father.") == ("She met her mother.", 3)
    assert s.swap("No paired term here.") == ("No paired term here.", 0)


def test_draw_is_fixed_by_id_and_seed():
    ids = range(5000)
    a = [counterfactual.draw(i, 7) for i in ids]
    assert a == [counterfactual.draw(i, 7) for i in ids]
    assert a != [counterfactual.draw(i, 8) for i in ids]
    share = sum(x < 0.3 for x in a) / len(a)
    assert 0.27 < share < 0.33  # a fraction of 0.3 draws about 30%


def test_augmenter_copies_drawn_documents_with_a_term_and_counts():
    spec = corpus_spec({"augmentation": {"counterfactual": {"fraction": 0.5}}})
    aug = counterfactual.Augmenter(spec)
    docs = [{"id": i, "text": "He left." if i % 2 else "Nothing to swap."} for i in range(400)]
    copies = [c for d in docs if (c := aug.copy(d))]
    drawn = [d for d in docs if counterfactual.draw(d["id"], spec.seed) < 0.5]
    with_term = [d for d in drawn if d["id"] % 2]
    assert aug.counts == {"drawn": len(drawn), "copies": len(with_term), "swaps": len(with_term)}
    assert [c["id"] for c in copies] == [d["id"] for d in with_term]
    assert all(c["text"] == "She left." and c["counterfactual"] for c in copies)
    assert counterfactual.Augmenter(corpus_spec({})).copy(docs[1]) is None  # fraction 0: off
    # a conversation (the chat format) has each message's content swapped
    chat = {"id": with_term[0]["id"], "messages": [{"role": "user", "content": "Is he home?"}]}
    assert aug.copy(chat)["messages"] == [{"role": "user", "content": "Is she home?"}]


def test_a_pairs_file_and_its_errors_name_the_field(tmp_path):
    f = tmp_path / "pairs.tsv"
    f.write_text("# colours\nred\tblue\ngreen  yellow\n")
    s = counterfactual.load(Counterfactual(fraction=1, pairs_uri=f"file://{f}"))
    assert s.swap("Red and blue, green.")[0] == "Blue and red, yellow."
    f.write_text("red blue\nred green\n")
    with pytest.raises(InputError, match=r"pairsUri: line 2: 'red' is paired with both 'blue' and 'green'"):
        counterfactual.load(Counterfactual(fraction=1, pairs_uri=f"file://{f}"))
    with pytest.raises(InputError, match=r"spec.augmentation.counterfactual.pairsUri: .* does not exist"):
        counterfactual.load(Counterfactual(fraction=1, pairs_uri=f"file://{tmp_path}/none.tsv"))


# ---- toxicity


def filler(n: int) -> str:
    return " ".join(["word"] * n)


def test_a_category_drops_a_document_only_above_its_threshold():
    s = toxicity.load(ToxicityFilter(threshold=0.02))
    assert s.reason("idiot " + filler(49)) is None  # 1 of 50 words: 0.02, not above
    assert s.reason("idiot " + filler(48)) == "toxicity.insult"  # 1 of 49
    assert s.scores("You are an idiot, shut up!") == {"insult": 3 / 6}  # a phrase counts its words


def test_per_category_thresholds_override_the_default():
    s = toxicity.load(ToxicityFilter(threshold=0.5, thresholds={"profanity": 0.0}))
    assert s.reason("crap " + filler(500)) == "toxicity.profanity"
    assert s.reason("idiot " + filler(3)) is None  # insult at 0.25 under the default 0.5
    # the defaults: any threat drops a document, even across line breaks and curly apostrophes
    d = toxicity.load(ToxicityFilter())
    assert d.reason(filler(300) + " I know where\nyou live.") == "toxicity.threat"
    assert d.reason(filler(300) + " I’ll kill you") == "toxicity.threat"
    assert d.reason("A kind letter about the village market and its bread.") is None
    # the first category over its threshold, by name
    assert d.reason("idiot shit") == "toxicity.insult"


def test_unknown_category_and_bad_lexicon_name_the_field(tmp_path):
    with pytest.raises(InputError, match=r"spec.filters.toxicity.thresholds.rude: the lexicon has no such"):
        toxicity.load(ToxicityFilter(thresholds={"rude": 0.1}))
    f = tmp_path / "lex.tsv"
    f.write_text("rude\tboo\nrude\tboo hoo\n")
    s = toxicity.load(ToxicityFilter(lexicon_uri=f"file://{f}", thresholds={}))
    assert s.scores("boo hoo boo") == {"rude": 1.0}
    f.write_text("rude\tboo\nmean\tboo\n")
    with pytest.raises(InputError, match=r"lexiconUri: line 2: 'boo' is in both 'rude' and 'mean'"):
        toxicity.load(ToxicityFilter(lexicon_uri=f"file://{f}", thresholds={}))
    f.write_text("justoneword\n")
    with pytest.raises(InputError, match=r"lexiconUri: .* line 1: expected two columns"):
        toxicity.load(ToxicityFilter(lexicon_uri=f"file://{f}", thresholds={}))


# ---- a whole preparation

GENDERED = [
    "He said that his father was a doctor.",
    "The king thanked his brother.",
    "My uncle met the man at the station.",
    "She told him that her son had left.",
]
TOXIC = {
    "insult": ["You are an idiot and a moron, shut up.", "Shut up, you idiot!"],
    "threat": ["I know where you live."],
}


def corpus_spec(extra: dict) -> object:
    from capstan_api.dataset import DatasetSpec

    return DatasetSpec.model_validate(corpus.spec("/in", "/out", **extra)["spec"])


def write_corpus(root: Path) -> dict:
    """Two files of distinct documents that each hold a paired term, three toxic ones and one
    exact duplicate; returns what was planted."""
    rng = random.Random(5)
    docs = [corpus.good_doc(rng, lines=3) + "\n" + GENDERED[i % len(GENDERED)] for i in range(40)]
    toxic = [corpus.good_doc(rng, lines=1) + "\n" + t for ts in TOXIC.values() for t in ts]
    lines = docs + toxic + [docs[3]]
    (root / "main").mkdir(parents=True)
    (root / "restricted").mkdir()
    (root / "restricted" / "r.jsonl").write_text(json.dumps({"text": "Not allowed in."}) + "\n")
    for k in range(2):
        with open(root / "main" / f"part-{k}.jsonl", "w") as f:
            for text in lines[k::2]:
                f.write(json.dumps({"text": text}) + "\n")
    return {"docs": docs, "kept": len(docs)}


PERMISSIVE = {  # only the toxicity filter judges these short documents
    "length": {"minChars": 1},
    "language": {"enabled": False},
    "gopherRepetition": {"enabled": False},
    "gopherQuality": {"enabled": False},
    "c4": {"enabled": False},
    "fineweb": {"enabled": False},
}


def prepare(tmp: Path, out: str, workers: int = 1, fraction: float = 0.5) -> dict:
    res = corpus.spec(
        str(tmp / "in"),
        str(tmp / out),
        filters=PERMISSIVE,
        augmentation={"counterfactual": {"fraction": fraction}},
        workers=workers,
        seed=3,
    )
    path = tmp / f"{out}.yaml"
    path.write_text(yaml.safe_dump(res))
    assert main(["-f", str(path)]) == 0
    return json.loads((tmp / out / "manifest.json").read_text())["stats"]


@pytest.fixture(scope="module")
def augmented(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cda")
    planted = write_corpus(tmp / "in")
    return tmp, planted, prepare(tmp, "out")


def test_copies_survive_dedup_and_are_counted(augmented):
    tmp, planted, s = augmented
    aug = s["augmentation"]
    assert 0 < aug["copies"] == aug["drawn"] < planted["kept"]  # every document has a paired term
    assert s["exactDuplicates"] == 1 and s["nearDuplicates"] == 0  # the planted one only
    assert s["documents"]["train"] + s["documents"]["validation"] == planted["kept"] + aug["copies"]
    steps = {x["stage"]: (x["in"], x["out"]) for x in s["stages"]}
    assert steps["augment"] == (planted["kept"], planted["kept"] + aug["copies"])
    assert steps["toxicity"] == (planted["kept"] + 1 + 3, planted["kept"] + 1)
    assert s["toxicity"] == {"removed": 3, "byCategory": {"insult": 2, "threat": 1}}
    assert s["filters"]["byRule"] == {"toxicity.insult": 2, "toxicity.threat": 1}


def test_each_copy_is_its_original_swapped_in_the_same_split(augmented):
    tmp, planted, s = augmented
    _, _, texts = decoded_texts(str(tmp / "out"))
    rows = [json.loads(x) for x in (tmp / "out" / "documents.jsonl").read_text().splitlines()]
    copies = [r for r in rows if r.get("counterfactual")]
    assert len(copies) == s["augmentation"]["copies"]
    originals = {(r["id"], r["split"]) for r in rows if not r.get("counterfactual")}
    assert all((c["id"], c["split"]) in originals for c in copies)
    everything = texts["train"] + texts["validation"]
    swapped = [t for t in everything if t not in planted["docs"]]
    assert len(swapped) == len(copies)
    assert all(swap(t) in planted["docs"] for t in swapped)  # swapping back gives an original
    assert any(t.endswith("She said that her mother was a doctor.") for t in swapped)
    assert not any(w in t for t in everything for w in ("idiot", "where you live"))


def test_datasheet_tells_the_thresholds_removals_and_copies(augmented):
    tmp, _, s = augmented
    sheet = (tmp / "out" / "datasheet.md").read_text()
    assert "## Toxicity and bias mitigation" in sheet
    assert "| insult | 0.02 | 2 |" in sheet and "| threat | 0 | 1 |" in sheet
    assert "| identityAttack | 0 | 0 |" in sheet and "| profanity | 0.02 | 0 |" in sheet
    assert f"{s['augmentation']['copies']}\nof them, those with a paired term" in sheet


def test_re_runs_and_worker_counts_give_the_same_output(augmented):
    tmp, _, s = augmented
    again = prepare(tmp, "out2", workers=2)
    assert again["augmentation"] == s["augmentation"]
    for f in sorted((tmp / "out").glob("*.bin")) + [tmp / "out" / "documents.jsonl"]:
        assert (tmp / "out2" / f.name).read_bytes() == f.read_bytes(), f.name


def test_datasheet_says_when_both_are_off():
    spec = corpus_spec({"filters": {"toxicity": {"enabled": False}}})
    stats = {
        "toxicity": {"removed": 0, "byCategory": {}},
        "augmentation": {"drawn": 0, "copies": 0, "swaps": 0},
    }
    text = datasheet.mitigation(spec, stats)
    assert "Toxicity filter off." in text and "No counterfactual data augmentation." in text
