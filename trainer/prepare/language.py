"""Language identification for the language filter: py3langid's naive Bayes model (a fork of
langid.py; 0.4 labels 140 languages by ISO 639 code), shipped inside the wheel, so nothing is
downloaded at run time."""

from __future__ import annotations

import functools

from py3langid.langid import MODEL_FILE, LanguageIdentifier

from capstan_trainer.prepare.read import InputError

# Only the text's start is classified: py3langid walks every byte in pure Python (~10 MB/s), and a
# few hundred words already settle the posterior, so longer documents (up to maxChars) would cost
# more without changing the answer.
PREFIX_CHARS = 2000


@functools.cache
def _identifier() -> LanguageIdentifier:
    # Built once per process (~0.5 s). All languages stay candidates: restricting them to the kept
    # ones would renormalise every document onto those and nothing would be dropped.
    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


@functools.cache
def check_codes(codes: tuple[str, ...]) -> None:
    """Fail on codes the model cannot answer, which would silently drop every document."""
    unknown = sorted(set(codes) - set(_identifier().labels))
    if unknown:
        known = ", ".join(sorted(_identifier().labels))
        raise InputError(
            f"spec.filters.language.languages: unknown code(s) {', '.join(unknown)}; known: {known}"
        )


def identify(text: str) -> tuple[str, float]:
    """(ISO 639 code, probability 0-1) of the most likely language of the text's start."""
    return _identifier().classify(text[:PREFIX_CHARS])
