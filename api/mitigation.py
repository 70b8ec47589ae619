"""Responsible data: a toxicity filter and counterfactual data augmentation (CDA) in Dataset
preparation, and the counts they report in status.

The toxicity filter runs in the map stage after the quality filters; CDA runs in the tokenize
stage after duplicates are dropped, so a copy is never taken for a near duplicate of its original
(it differs by a few words) and inherits its original's fate in deduplication and its split.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from capstan_api.common import OPTIONAL_URI_PATTERN, ApiModel

# The categories of the built-in lexicon (trainer/prepare/lexicons/toxicity.tsv).
BUILTIN_CATEGORIES = ("identityAttack", "insult", "profanity", "sexual", "threat")
Share = Annotated[float, Field(ge=0, le=1)]


class ToxicityFilter(ApiModel):
    """A lexicon scorer: a document's score in a category is the share of its words that match
    the category's terms (a phrase counts as one match per word it spans)."""

    enabled: bool = Field(default=True, description="enabled turns the toxicity filter on.")
    lexicon_uri: str = Field(
        default="",
        max_length=2000,
        pattern=OPTIONAL_URI_PATTERN,
        description=(
            "lexiconUri is an fsspec URI of a lexicon file (lines 'category<TAB>term or phrase', '#' "
            "comments); empty uses the built-in English lexicon (categories identityAttack, insult, "
            "profanity, sexual, threat)."
        ),
    )
    threshold: Share = Field(
        default=0.02,
        description=(
            "threshold is the share of words (0-1) above which a category drops a document, for every "
            "category thresholds does not name; 0 drops a document on any match, 1 never drops."
        ),
    )
    thresholds: dict[str, Share] = Field(
        default_factory=lambda: {"identityAttack": 0.0, "threat": 0.0},
        max_length=64,
        description=(
            "thresholds overrides threshold per category (e.g. profanity: 0.05), each a category of the "
            "lexicon; a dropped document is counted as toxicity.<category>, the first category over its "
            "threshold in name order."
        ),
    )


class Counterfactual(ApiModel):
    """Counterfactual data augmentation (Lu et al. 2018; Zmigrod et al. 2019): a share of the kept
    documents is duplicated with paired terms swapped (he/she, man/woman, ...), whole words, case
    kept, so the model sees each context with both groups."""

    fraction: Share = Field(
        default=0.0,
        description=(
            "fraction of kept documents (0-1) that get a swapped copy, drawn by a hash of the document "
            "id and spec.seed (re-runs draw the same); 0 turns augmentation off. A drawn document with "
            "no paired term gets no copy."
        ),
    )
    pairs_uri: str = Field(
        default="",
        max_length=2000,
        pattern=OPTIONAL_URI_PATTERN,
        description=(
            "pairsUri is an fsspec URI of a pairs file (one pair a line, two terms separated by a tab "
            "or spaces, '#' comments), swapped both ways; empty uses the built-in English gender pairs."
        ),
    )


class Augmentation(ApiModel):
    counterfactual: Counterfactual = Field(
        default_factory=Counterfactual, description="counterfactual is counterfactual data augmentation."
    )


class ToxicityCounts(ApiModel):
    removed: int = Field(default=0, description="removed is how many documents the toxicity filter dropped.")
    by_category: dict[str, int] = Field(
        default_factory=dict, description="byCategory is the documents dropped per lexicon category."
    )


class AugmentationCounts(ApiModel):
    drawn: int = Field(default=0, description="drawn is how many kept documents were drawn for a copy.")
    copies: int = Field(
        default=0, description="copies is how many swapped copies were added (drawn ones with a paired term)."
    )
    swaps: int = Field(default=0, description="swaps is how many terms were replaced in the copies.")
