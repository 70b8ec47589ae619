"""Stage 4: quality filters. Each returns None to keep a document or a reason "family.rule".

The rules and defaults follow Gopher (Rae et al. 2021), C4 (Raffel et al. 2020) and FineWeb
(Penedo et al. 2024) as datatrove implements them; words are whitespace-separated tokens.
"""

from __future__ import annotations

import re

import numpy as np

from capstan_api.cleaning import (
    C4Filter,
    Filters,
    FineWebFilter,
    GopherQuality,
    GopherRepetition,
    LanguageFilter,
)
from capstan_trainer.prepare import language as lid

# English only: the Gopher stop-word rule applies to documents identified as English.
STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})
BULLETS = ("•", "-", "*", "●", "‣", "◦", "▪", "–")
ELLIPSES = ("...", "…")
END_PUNCT = (".", "!", "?", '"', "'", "”", "’")
PUNCT = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~“”‘’«»…–—")
POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
_PARAGRAPHS = re.compile(r"\n{2,}")
_LINES = re.compile(r"\n+")
_SENTENCE_END = re.compile(r"[.!?]+(?:\s|$)")
_P = np.uint64(0x100000001B3)  # FNV prime: multiplier for rolling n-gram keys


def apply_filters(text: str, f: Filters) -> tuple[str, str | None]:
    """Run the enabled filters in order; (possibly line-trimmed text, reason or None)."""
    if f.length.enabled and not (f.length.min_chars <= len(text) <= f.length.max_chars):
        return text, "length.minChars" if len(text) < f.length.min_chars else "length.maxChars"
    english = True  # with the language filter off, text is assumed English (as Gopher's rules do)
    if f.language.enabled:
        code, r = language(text, f.language)
        if r:
            return text, r
        english = code == "en"
    if f.gopher_repetition.enabled and (r := gopher_repetition(text, f.gopher_repetition)):
        return text, r
    if f.gopher_quality.enabled and (r := gopher_quality(text, f.gopher_quality, english)):
        return text, r
    if f.c4.enabled:
        text, r = c4(text, f.c4)
        if r:
            return text, r
    if f.fineweb.enabled and (r := fineweb(text, f.fineweb)):
        return text, r
    return text, None


def language(text: str, lf: LanguageFilter) -> tuple[str, str | None]:
    """(most likely language, reason or None): unsure first, then a language not listed."""
    lid.check_codes(tuple(lf.languages))
    code, score = lid.identify(text)
    if score < lf.min_score:
        return code, "language.lowScore"
    if code not in lf.languages:
        return code, f"language.{code}"
    return code, None


def _duplicates(items: list[str]) -> tuple[int, int]:
    """(repeated elements, characters in them), counting every occurrence after the first."""
    seen: set[str] = set()
    n = chars = 0
    for x in items:
        if x in seen:
            n += 1
            chars += len(x)
        else:
            seen.add(x)
    return n, chars


def gopher_repetition(text: str, g: GopherRepetition) -> str | None:
    size = max(len(text), 1)
    paragraphs = _PARAGRAPHS.split(text.strip())
    n, chars = _duplicates(paragraphs)
    if n / len(paragraphs) > g.max_duplicate_paragraph_fraction:
        return "gopherRepetition.duplicateParagraphs"
    if chars / size > g.max_duplicate_paragraph_char_fraction:
        return "gopherRepetition.duplicateParagraphChars"
    lines = _LINES.split(text)
    n, chars = _duplicates(lines)
    if n / len(lines) > g.max_duplicate_line_fraction:
        return "gopherRepetition.duplicateLines"
    if chars / size > g.max_duplicate_line_char_fraction:
        return "gopherRepetition.duplicateLineChars"
    words = text.split()
    if not words:
        return None
    ids: dict[str, int] = {}
    arr = np.fromiter((ids.setdefault(w, len(ids) + 1) for w in words), dtype=np.uint64, count=len(words))
    cum = np.concatenate(([0], np.cumsum([len(w) for w in words])))
    top = {x.n: x.max_fraction for x in g.top_ngrams}
    dup = {x.n: x.max_fraction for x in g.duplicate_ngrams}
    keys = arr
    for n in range(2, max([*top, *dup, 1]) + 1):
        if len(words) < n:
            break
        keys = keys[:-1] * _P + arr[n - 1 :]  # key of words[i:i+n], wrapping mod 2^64
        if n not in top and n not in dup:
            continue
        lengths = cum[n:] - cum[:-n] + (n - 1)  # characters of each n-gram joined by spaces
        uniq, first, counts = np.unique(keys, return_index=True, return_counts=True)
        if n in top:
            best = int(np.argmax(counts))
            if counts[best] > 1 and counts[best] * lengths[first[best]] / size > top[n]:
                return f"gopherRepetition.top{n}grams"
        if n in dup and counts.max() > 1:
            first_pos = first[np.searchsorted(uniq, keys)]
            repeated = np.flatnonzero(first_pos < np.arange(len(keys)))
            chars, nxt = 0, 0
            for i in repeated.tolist():  # non-overlapping, left to right, as Gopher counts them
                if i >= nxt:
                    chars += int(lengths[i])
                    nxt = i + n
            if chars / size > dup[n]:
                return f"gopherRepetition.duplicate{n}grams"
    return None


def gopher_quality(text: str, g: GopherQuality, english: bool = True) -> str | None:
    words = text.split()
    n = len(words)
    if n < g.min_words:
        return "gopherQuality.minWords"
    if n > g.max_words:
        return "gopherQuality.maxWords"
    if n == 0:
        return None
    content = [w for w in words if any(c not in PUNCT for c in w)]
    mean = sum(map(len, content)) / max(len(content), 1)
    if mean < g.min_mean_word_length:
        return "gopherQuality.minMeanWordLength"
    if mean > g.max_mean_word_length:
        return "gopherQuality.maxMeanWordLength"
    symbols = text.count("#") + text.count("...") + text.count("…")
    if symbols / n > g.max_symbol_word_ratio:
        return "gopherQuality.symbolWordRatio"
    lines = text.splitlines() or [""]
    if sum(ln.lstrip().startswith(BULLETS) for ln in lines) / len(lines) > g.max_bullet_lines_ratio:
        return "gopherQuality.bulletLines"
    if sum(ln.rstrip().endswith(ELLIPSES) for ln in lines) / len(lines) > g.max_ellipsis_lines_ratio:
        return "gopherQuality.ellipsisLines"
    if sum(any(c.isalpha() for c in w) for w in words) / n < g.min_alpha_words_ratio:
        return "gopherQuality.alphaWords"
    if english and sum(w.lower() in STOP_WORDS for w in words) < g.min_stop_words:
        return "gopherQuality.stopWords"
    return None


def c4(text: str, c: C4Filter) -> tuple[str, str | None]:
    """Remove bad lines; drop the document on lorem ipsum, curly brackets or too few sentences."""
    kept: list[str] = []
    sentences = 0
    for line in text.splitlines():
        line = line.strip()
        words = line.split()
        if not words or max(map(len, words)) > c.max_word_length:
            continue
        if c.require_terminal_punctuation and (not line.endswith(END_PUNCT) or line.endswith(ELLIPSES)):
            continue
        if len(words) < c.min_words_per_line:
            continue
        low = line.lower()
        if c.drop_lorem_ipsum and "lorem ipsum" in low:
            return text, "c4.loremIpsum"
        if c.remove_javascript_lines and "javascript" in low:
            continue
        if c.drop_curly_brackets and "{" in line:
            return text, "c4.curlyBrackets"
        if c.remove_policy_lines and any(p in low for p in POLICY):
            continue
        sentences += max(len(_SENTENCE_END.findall(line)), 1)
        kept.append(line)
    if sentences < c.min_sentences:
        return text, "c4.minSentences"
    return "\n".join(kept).strip(), None


def fineweb(text: str, f: FineWebFilter) -> str | None:
    lines = [ln for ln in text.split("\n") if ln.strip()]
    if not lines:
        return "fineweb.empty"
    if sum(ln.endswith(END_PUNCT) for ln in lines) / len(lines) < f.min_punctuated_line_ratio:
        return "fineweb.punctuatedLines"
    if sum(len(ln) <= f.short_line_chars for ln in lines) / len(lines) >= f.max_short_line_ratio:
        return "fineweb.shortLines"
    if _duplicates(lines)[1] / max(len(text.replace("\n", "")), 1) >= f.max_duplicate_line_char_ratio:
        return "fineweb.duplicateLineChars"
    if text.count("\n") / max(len(text.split()), 1) > f.max_newline_word_ratio:
        return "fineweb.newlineWordRatio"
    return None
