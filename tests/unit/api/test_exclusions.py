"""The exclusion rules' matching order and labels (field paths, so counts never repeat the data)."""

from __future__ import annotations

from capstan_api.exclusions import ExclusionRules, Matcher, merged


def test_a_document_counts_against_its_first_rule_in_label_order():
    inline = ExclusionRules(document_ids=[7], urls=["https://a/*"], patterns=[r"secret\d"])
    listed = ExclusionRules(document_ids=[9], urls=["https://b/x"], patterns=["jane"])
    rules, labels = merged(inline, listed, "spec.exclusions.uri(s3://l).")
    assert labels == [
        "spec.exclusions.documentIds[0]",
        "spec.exclusions.uri(s3://l).documentIds[0]",
        "spec.exclusions.urls[0]",
        "spec.exclusions.uri(s3://l).urls[0]",
        "spec.exclusions.patterns[0]",
        "spec.exclusions.uri(s3://l).patterns[0]",
    ]
    m = Matcher(rules)
    assert labels[m.match(7, "https://a/1", "jane")] == "spec.exclusions.documentIds[0]"
    assert labels[m.match(9, "", "")] == "spec.exclusions.uri(s3://l).documentIds[0]"
    assert labels[m.match(1, "https://a/deep/page", "")] == "spec.exclusions.urls[0]"
    assert labels[m.match(1, "https://b/x", "secret1")] == "spec.exclusions.uri(s3://l).urls[0]"
    assert labels[m.match(1, "https://b/y", "a secret1 here, jane")] == "spec.exclusions.patterns[0]"
    assert m.match(1, "https://b/y", "nothing") is None
    assert m.match(1, "https://b/x/more", "") is None, "an exact URL is not a prefix"


def test_no_rules_match_nothing():
    assert not Matcher(ExclusionRules())
