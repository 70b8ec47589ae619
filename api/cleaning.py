"""How each document is cleaned before tokenizing: text normalisation, quality filters,
deduplication and PII redaction, in the order the pipeline applies them.

Defaults follow the published pipelines the filters come from (Gopher, C4, FineWeb as implemented
in datatrove).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, model_validator

from capstan_api.common import ApiModel, cel
from capstan_api.mitigation import ToxicityFilter


class Cleaning(ApiModel):
    """Text normalisation applied to every document before filtering and deduplication."""

    unicode: Literal["NFC", "NFKC", "none"] = Field(default="NFC", description="unicode normalisation form.")
    whitespace: bool = Field(
        default=True,
        description="whitespace collapses runs of spaces/tabs, trims lines and caps blank lines at one.",
    )
    control_characters: bool = Field(
        default=True,
        description="controlCharacters removes control and format characters except newline/tab.",
    )
    mojibake: bool = Field(
        default=True,
        description=(
            "mojibake repairs text decoded with the wrong encoding (e.g. 'â€™' -> '’', UTF-8 read as "
            "cp1252 or latin-1) with ftfy, and nothing else ftfy could change."
        ),
    )


class LengthFilter(ApiModel):
    enabled: bool = Field(default=True, description="enabled turns the length filter on.")
    min_chars: int = Field(
        default=1,
        ge=0,
        le=1_000_000_000,
        description="minChars is the fewest characters a document may have.",
    )
    max_chars: int = Field(
        default=1_000_000,
        ge=1,
        le=1_000_000_000,
        description="maxChars is the most characters a document may have.",
    )

    model_config = ConfigDict(
        json_schema_extra=cel(("self.minChars <= self.maxChars", "minChars must not exceed maxChars"))
    )

    @model_validator(mode="after")
    def _check(self) -> LengthFilter:
        if self.min_chars > self.max_chars:
            raise ValueError("minChars must not exceed maxChars")
        return self


class GopherQuality(ApiModel):
    """Gopher quality rules (Rae et al. 2021, appendix A)."""

    enabled: bool = Field(default=True, description="enabled turns the Gopher quality rules on.")
    min_words: int = Field(
        default=50, ge=0, le=100_000_000, description="minWords is the fewest words a document may have."
    )
    max_words: int = Field(
        default=100_000, ge=1, le=100_000_000, description="maxWords is the most words a document may have."
    )
    min_mean_word_length: float = Field(
        default=3.0, ge=0, le=1000, description="minMeanWordLength in characters."
    )
    max_mean_word_length: float = Field(
        default=10.0, ge=0, le=1000, description="maxMeanWordLength in characters."
    )
    max_symbol_word_ratio: float = Field(
        default=0.1, ge=0, le=1000, description="maxSymbolWordRatio bounds ('#' + '...' occurrences) / words."
    )
    max_bullet_lines_ratio: float = Field(
        default=0.9,
        ge=0,
        le=1,
        description="maxBulletLinesRatio bounds the fraction of lines starting with a bullet.",
    )
    max_ellipsis_lines_ratio: float = Field(
        default=0.3,
        ge=0,
        le=1,
        description="maxEllipsisLinesRatio bounds the fraction of lines ending in an ellipsis.",
    )
    min_alpha_words_ratio: float = Field(
        default=0.8,
        ge=0,
        le=1,
        description="minAlphaWordsRatio is the least fraction of words with a letter.",
    )
    min_stop_words: int = Field(
        default=2,
        ge=0,
        le=1_000_000,
        description=(
            "minStopWords is the fewest of the, be, to, of, and, that, have, with. English stop words: "
            "the rule applies only to documents the language filter identifies as English, or to "
            "every document when the language filter is off (it then assumes English text)."
        ),
    )

    model_config = ConfigDict(
        json_schema_extra=cel(
            ("self.minWords <= self.maxWords", "minWords must not exceed maxWords"),
            (
                "self.minMeanWordLength <= self.maxMeanWordLength",
                "minMeanWordLength must not exceed maxMeanWordLength",
            ),
        )
    )

    @model_validator(mode="after")
    def _check(self) -> GopherQuality:
        if self.min_words > self.max_words:
            raise ValueError("minWords must not exceed maxWords")
        if self.min_mean_word_length > self.max_mean_word_length:
            raise ValueError("minMeanWordLength must not exceed maxMeanWordLength")
        return self


class NGramLimit(ApiModel):
    n: int = Field(ge=1, le=20, description="n is the n-gram length in words.")
    max_fraction: float = Field(ge=0, le=1, description="maxFraction bounds the characters they may cover.")


class GopherRepetition(ApiModel):
    """Gopher repetition rules: duplicated lines/paragraphs and repeated n-grams."""

    enabled: bool = Field(default=True, description="enabled turns the Gopher repetition rules on.")
    max_duplicate_line_fraction: float = Field(
        default=0.3, ge=0, le=1, description="maxDuplicateLineFraction of lines."
    )
    max_duplicate_paragraph_fraction: float = Field(
        default=0.3, ge=0, le=1, description="maxDuplicateParagraphFraction of paragraphs."
    )
    max_duplicate_line_char_fraction: float = Field(
        default=0.2, ge=0, le=1, description="maxDuplicateLineCharFraction of characters in duplicated lines."
    )
    max_duplicate_paragraph_char_fraction: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description="maxDuplicateParagraphCharFraction of characters in duplicated paragraphs.",
    )
    top_ngrams: list[NGramLimit] = Field(
        default_factory=lambda: [
            NGramLimit(n=2, max_fraction=0.2),
            NGramLimit(n=3, max_fraction=0.18),
            NGramLimit(n=4, max_fraction=0.16),
        ],
        max_length=10,
        description="topNgrams bounds the character share of the most frequent n-gram, per n.",
    )
    duplicate_ngrams: list[NGramLimit] = Field(
        default_factory=lambda: [
            NGramLimit(n=n, max_fraction=f)
            for n, f in ((5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10))
        ],
        max_length=10,
        description="duplicateNgrams bounds the character share of n-grams occurring more than once, per n.",
    )


class C4Filter(ApiModel):
    """C4-style line rules (Raffel et al. 2020): remove bad lines, drop bad documents."""

    enabled: bool = Field(default=True, description="enabled turns the C4 rules on.")
    min_words_per_line: int = Field(
        default=3, ge=0, le=1_000_000, description="minWordsPerLine: shorter lines are removed."
    )
    min_sentences: int = Field(
        default=5, ge=0, le=1_000_000, description="minSentences: documents with fewer are dropped."
    )
    max_word_length: int = Field(
        default=1000, ge=1, le=1_000_000, description="maxWordLength: lines with a longer word are removed."
    )
    require_terminal_punctuation: bool = Field(
        default=False,
        description="requireTerminalPunctuation removes lines not ending in . ! ? or a quote (off in FineWeb).",
    )
    remove_javascript_lines: bool = Field(
        default=True, description="removeJavascriptLines removes lines naming javascript."
    )
    remove_policy_lines: bool = Field(
        default=True, description="removePolicyLines removes cookie/terms-of-use/privacy-policy lines."
    )
    drop_lorem_ipsum: bool = Field(
        default=True, description="dropLoremIpsum drops documents with 'lorem ipsum'."
    )
    drop_curly_brackets: bool = Field(
        default=True, description="dropCurlyBrackets drops documents containing '{'."
    )


class FineWebFilter(ApiModel):
    """FineWeb's own rules (Penedo et al. 2024)."""

    enabled: bool = Field(default=True, description="enabled turns the FineWeb rules on.")
    min_punctuated_line_ratio: float = Field(
        default=0.12,
        ge=0,
        le=1,
        description="minPunctuatedLineRatio: fewer lines ending in punctuation drops it.",
    )
    short_line_chars: int = Field(
        default=30, ge=1, le=1_000_000, description="shortLineChars: a line this long or shorter is short."
    )
    max_short_line_ratio: float = Field(
        default=0.67,
        ge=0,
        le=1,
        description="maxShortLineRatio: at least this share of short lines drops it.",
    )
    max_duplicate_line_char_ratio: float = Field(
        default=0.01, ge=0, le=1, description="maxDuplicateLineCharRatio: characters in repeated lines / all."
    )
    max_newline_word_ratio: float = Field(
        default=0.3,
        ge=0,
        le=1000,
        description="maxNewlineWordRatio: more newlines per word than this drops it.",
    )


# An ISO 639 code as py3langid names its languages: mostly 639-1 ("en"), a few 639-3 ("ace").
LanguageCode = Annotated[str, Field(min_length=2, max_length=3, pattern=r"^[a-z]{2,3}$")]


class LanguageFilter(ApiModel):
    """Language identification with py3langid (langid.py's naive Bayes model), as FineWeb's
    LanguageFilter does with fastText: keep documents whose most likely language is listed."""

    enabled: bool = Field(default=True, description="enabled turns language identification on.")
    languages: list[LanguageCode] = Field(
        default_factory=lambda: ["en"],
        min_length=1,
        max_length=200,
        description=(
            "languages are the ISO 639 codes to keep (py3langid's labels, e.g. en, de, fr, ja); "
            "a document whose most likely language is another is dropped as language.<code>."
        ),
    )
    min_score: float = Field(
        default=0.65,
        ge=0,
        le=1,
        description=(
            "minScore is the least probability (0-1) of the most likely language; a document below "
            "it is dropped as language.lowScore (0.65 as in FineWeb)."
        ),
    )


class Filters(ApiModel):
    """Quality filters, applied in this order; each one is counted in the statistics."""

    length: LengthFilter = Field(default_factory=LengthFilter, description="length bounds in characters.")
    language: LanguageFilter = Field(
        default_factory=LanguageFilter, description="language keeps documents in the listed languages."
    )
    gopher_repetition: GopherRepetition = Field(
        default_factory=GopherRepetition, description="gopherRepetition rules."
    )
    gopher_quality: GopherQuality = Field(default_factory=GopherQuality, description="gopherQuality rules.")
    c4: C4Filter = Field(default_factory=C4Filter, description="c4 line rules.")
    fineweb: FineWebFilter = Field(default_factory=FineWebFilter, description="fineweb rules.")
    toxicity: ToxicityFilter = Field(
        default_factory=ToxicityFilter,
        description="toxicity drops documents by a lexicon's per-category shares.",
    )


class NearDedup(ApiModel):
    """MinHash LSH over word n-grams; one document per cluster (the lowest id) is kept."""

    enabled: bool = Field(default=True, description="enabled turns near-duplicate removal on.")
    ngram: int = Field(default=5, ge=1, le=32, description="ngram is the shingle length in words.")
    bands: int = Field(default=14, ge=1, le=64, description="bands is the number of LSH bands.")
    rows: int = Field(default=8, ge=1, le=64, description="rows is the number of hashes per band.")
    threshold: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="threshold, when above 0, also requires the estimated Jaccard of a candidate pair to reach it.",
    )

    model_config = ConfigDict(
        json_schema_extra=cel(("self.bands * self.rows <= 1024", "bands x rows must not exceed 1024 hashes"))
    )

    @model_validator(mode="after")
    def _check(self) -> NearDedup:
        if self.bands * self.rows > 1024:
            raise ValueError("bands x rows must not exceed 1024 hashes")
        return self


class Dedup(ApiModel):
    exact: bool = Field(default=True, description="exact removes documents whose normalised text repeats.")
    near: NearDedup = Field(default_factory=NearDedup, description="near is near-duplicate removal.")


class PiiPattern(ApiModel):
    name: str = Field(
        min_length=1,
        max_length=32,
        pattern=r"^[A-Z][A-Z0-9_]*$",
        description="name is the placeholder type, written as <NAME> in place of each match.",
    )
    pattern: str = Field(min_length=1, max_length=1000, description="pattern is a Python regular expression.")

    @model_validator(mode="after")
    def _compile(self) -> PiiPattern:
        try:
            re.compile(self.pattern)
        except re.error as exc:
            raise ValueError(f"pattern does not compile: {exc}") from exc
        return self


# An ISO 3166-1 alpha-2 region code, as libphonenumber names numbering plans.
RegionCode = Annotated[str, Field(min_length=2, max_length=2, pattern=r"^[A-Z]{2}$")]


class Pii(ApiModel):
    """PII redaction with typed placeholders, counted per type."""

    email: bool = Field(default=True, description="email replaces e-mail addresses with <EMAIL>.")
    ip_address: bool = Field(
        default=True, description="ipAddress replaces public IPv4/IPv6 addresses with <IP_ADDRESS>."
    )
    phone: bool = Field(
        default=True,
        description=(
            "phone replaces phone numbers with <PHONE>: digit groups with separators, or +digits, "
            "that libphonenumber finds valid for their country."
        ),
    )
    phone_regions: list[RegionCode] = Field(
        default_factory=lambda: ["US", "GB", "DE", "FR", "IN", "JP", "BR"],
        max_length=32,
        description=(
            "phoneRegions are the ISO 3166 alpha-2 regions whose national layouts (no +country code, "
            "e.g. '030 1234 5678' in DE) count as phone numbers; US covers all of +1. Numbers written "
            "with +country code are found whatever this lists; an empty list finds only those."
        ),
    )
    credit_card: bool = Field(
        default=True, description="creditCard replaces Luhn-valid card numbers with <CREDIT_CARD>."
    )
    extra: list[PiiPattern] = Field(
        default_factory=list,
        max_length=32,
        description="extra are further patterns, applied after the built-in ones.",
    )

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "self.extra.all(x, self.extra.exists_one(y, y.name == x.name))",
                "extra pattern names must be unique",
            )
        )
    )

    @model_validator(mode="after")
    def _check(self) -> Pii:
        names = [p.name for p in self.extra]
        if len(names) != len(set(names)):
            raise ValueError("extra pattern names must be unique")
        return self
