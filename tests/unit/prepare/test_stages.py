"""Single stages against references: MinHash vs datasketch, filters, normalisation, PII."""

from __future__ import annotations

import random

import numpy as np
import pytest
from datasketch import MinHash

from capstan_api.cleaning import Cleaning, Filters, Pii
from capstan_trainer.prepare import dedup, pii
from capstan_trainer.prepare.filters import apply_filters
from capstan_trainer.prepare.normalize import normalize
from tests.unit.prepare import corpus


def test_minhash_signatures_equal_datasketch_affine64():
    rng = random.Random(1)
    texts = [corpus.good_doc(rng, lines=2) for _ in range(5)] + ["two words", ""]
    shingler = dedup.Shingler(5)
    sh = [shingler(t) for t in texts]
    a, b = dedup.permutations(112, seed=3)
    ours = dedup.signatures(sh, a, b)
    for row, s in zip(ours, sh, strict=True):
        ref = MinHash(num_perm=112, seed=3, scheme="affine64", hashfunc=int)
        ref.update_batch(s.tolist())
        assert np.array_equal(row, ref.hashvalues)


def test_near_duplicates_keep_lowest_id_per_cluster():
    rng = random.Random(2)
    base = [corpus.good_doc(rng) for _ in range(4)]
    docs = [
        base[0],
        corpus.near_copy(rng, base[0], 0.9),
        base[1],
        corpus.near_copy(rng, base[0], 0.9),
        base[2],
        corpus.near_copy(rng, base[2], 0.3),
        base[3],
    ]
    shingler = dedup.Shingler(5)
    sig = dedup.signatures([shingler(t) for t in docs], *dedup.permutations(112, 0))
    keys = dedup.band_keys(sig, 14, 8)
    assert dedup.near_duplicates(keys).tolist() == [1, 3]
    # a verification threshold above the pairs' Jaccard keeps them
    assert dedup.near_duplicates(keys, sig, threshold=0.99).tolist() == []


def test_filters_keep_good_text_and_name_the_rule():
    rng = random.Random(3)
    f = Filters()
    assert apply_filters(corpus.good_doc(rng), f)[1] is None
    rep = "\n".join(["The same line of text repeats here again."] * 10)
    assert apply_filters(rep, f)[1] == "gopherRepetition.duplicateLines"
    ngram = " ".join(["the cat sat on the mat"] * 40)
    assert apply_filters(ngram, f)[1] == "gopherRepetition.top2grams"
    text, reason = apply_filters(corpus.good_doc(rng) + "\nPlease enable javascript to see this page.", f)
    assert reason is None and "javascript" not in text
    assert apply_filters("", f)[1] == "length.minChars"


# Original prose, ~60 words each in 5 lines of 2 sentences: passes every other default filter.
GERMAN = (
    "Am Morgen fuhr der alte Bäcker mit dem Fahrrad durch die stillen Straßen der Stadt. "
    "Er brachte frisches Brot zu den Nachbarn, die schon früh auf ihn warteten.\n"
    "Im Sommer blühen im Garten hinter dem Haus viele bunte Blumen. Die Kinder spielen dort "
    "bis zum Abend und erzählen sich Geschichten über ferne Länder.\n"
    "Der Fluss fließt langsam an der kleinen Mühle vorbei. Früher wurde hier Korn gemahlen, "
    "heute ist die Mühle ein Museum für Besucher aus aller Welt.\n"
    "Wenn es regnet, sitzt die Familie gern in der warmen Küche. Dann kocht die Großmutter "
    "eine Suppe, deren Duft durch das ganze Haus zieht.\n"
    "Im Herbst sammeln die Leute Äpfel und Birnen im Obstgarten. Aus den Früchten machen sie "
    "Saft und Kuchen für das große Fest im Dorf."
)
FRENCH = (
    "Le matin, le vieux boulanger traverse les rues calmes de la ville à vélo. "
    "Il apporte du pain frais aux voisins qui l'attendent déjà devant leur porte.\n"
    "En été, le jardin derrière la maison se couvre de fleurs de toutes les couleurs. Les enfants "
    "y jouent jusqu'au soir et se racontent des histoires de pays lointains.\n"
    "La rivière coule lentement devant le petit moulin. Autrefois on y moulait le blé, "
    "aujourd'hui le moulin est un musée qui accueille des visiteurs du monde entier."
)


def test_language_filter_keeps_listed_languages_and_stop_words_only_for_english():
    rng = random.Random(4)
    f = Filters()
    assert apply_filters(corpus.good_doc(rng), f)[1] is None
    assert apply_filters(GERMAN, f)[1] == "language.de"
    assert apply_filters(FRENCH, f)[1] == "language.fr"
    assert apply_filters("1234 5678 9012 3456 " * 20, f)[1] == "language.lowScore"
    # German kept when listed, and not held to the English stop-word rule
    assert apply_filters(GERMAN, Filters(language={"languages": ["en", "de"]}))[1] is None
    # with the filter off the stop-word rule assumes English, as documented
    assert apply_filters(GERMAN, Filters(language={"enabled": False}))[1] == "gopherQuality.stopWords"
    with pytest.raises(ValueError, match="unknown code"):
        apply_filters(GERMAN, Filters(language={"languages": ["en", "xx"]}))


def test_normalisation():
    c = Cleaning()
    assert normalize("Cafe\u0301  au\tlait\u200b \r\n\n\n\nnext\x07 line ", c) == "Café au lait\n\nnext line"
    assert normalize("donâ€™t and naÃ¯ve", c) == "don’t and naïve"
    good = "The über café’s naïve — 10 €"
    assert normalize(good.encode().decode("cp1252"), c) == good
    assert normalize("it\x92s", c) == "it’s"  # a cp1252 character read as a C1 control
    # only the encoding is repaired: quotes, ligatures, full-width letters and entities stay
    kept = "already fine’s naïve “quoted” ﬁne ＡＢＣ &amp; — ok"
    assert normalize(kept, c) == kept
    assert normalize("donâ€™t", Cleaning(mojibake=False)) == "donâ€™t"


def test_pii_types_and_non_pii():
    rules = pii.build_rules(Pii(extra=[{"name": "EMPLOYEE_ID", "pattern": r"EMP-\d{6}"}]))
    text = (
        "mail a.b@example.co.uk or call +1 (415) 555-0132, card 4111-1111-1111-1111, "
        "host 8.8.8.8 and 2606:4700::1, badge EMP-123456; not: 10.0.0.1, ::1, 4111 1111 1111 1112, 3.14159"
    )
    out, counts = pii.redact(text, rules)
    assert counts == {"EMAIL": 1, "PHONE": 1, "CREDIT_CARD": 1, "IP_ADDRESS": 2, "EMPLOYEE_ID": 1}
    assert "10.0.0.1" in out and "4111 1111 1111 1112" in out and "3.14159" in out and "::1" in out


# Numbers in other countries' layouts (phoneRegions' defaults), with and without +country code.
PHONES = [
    "030 12345678",  # DE, Berlin
    "+49 30 1234567",
    "+49 (0)30 1234567",
    "01 23 45 67 89",  # FR
    "+33 1 23 45 67 89",
    "+91 98765 43210",  # IN, mobile
    "03-1234-5678",  # JP, Tokyo
    "+81 3-1234-5678",
    "(11) 91234-5678",  # BR, São Paulo mobile
    "+55 11 91234-5678",
    "+44 (0) 20 7946 0958",  # GB
    "212.555.0199",  # US
]
# Digits with separators that are not phone numbers.
LOOK_ALIKES = [
    "1.2.3",
    "10.0.19041",
    "v10.0.19041.1234",
    "2026-11-28",
    "28.11.2026",
    "2026-11-28T10:15:30Z",
    "2026-11-28 10:15:30",
    "11-28-2026",
    "192.168.1.1",
    "10.0.0.1",
    "12345678",
    "4829301756",
    "1999 2000 2001",
    "ISBN 978-3-16-148410-0",
    "1,000,000",
    "4111 1111 1111 1112",
]


@pytest.mark.parametrize("number", PHONES)
def test_pii_international_phone_numbers(number):
    rules = pii.build_rules(Pii())
    out, counts = pii.redact(f"Ring the desk on {number}. Ask for Sam.", rules)
    assert (out, counts) == ("Ring the desk on <PHONE>. Ask for Sam.", {"PHONE": 1})


def test_pii_phone_look_alikes_survive():
    rules = pii.build_rules(Pii())
    text = "Logged: " + "; ".join(LOOK_ALIKES) + "."
    assert pii.redact(text, rules) == (text, {})
    # a number glued to a neighbouring group is still found, without it
    assert pii.redact("see page 2 030 1234 5678", rules) == ("see page 2 <PHONE>", {"PHONE": 1})
    # a card is still a card, not a phone number
    assert pii.redact("pay with 4111-1111-1111-1111 today", rules) == (
        "pay with <CREDIT_CARD> today",
        {"CREDIT_CARD": 1},
    )


def test_pii_phone_regions():
    # without DE among the regions a German national number is not recognised; with + it still is
    rules = pii.build_rules(Pii(phone_regions=["US"]))
    assert pii.redact("call 030 12345678 or +49 30 1234567", rules) == (
        "call 030 12345678 or <PHONE>",
        {"PHONE": 1},
    )
    with pytest.raises(ValueError, match="phoneRegions"):
        pii.build_rules(Pii(phone_regions=["XX"]))
    assert pii.luhn_ok("79927398713") and not pii.luhn_ok("79927398710")
