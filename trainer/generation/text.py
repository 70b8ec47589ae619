"""Incremental detokenization with stop strings: what text of a growing token list may be sent
now, and where the completion ends."""

from __future__ import annotations

from tokenizers import Tokenizer


class TextTracker:
    """Follows one sequence's generated tokens. `update()` returns the new text that is safe to
    send: never a partial UTF-8 character, never a prefix of a stop string that may still complete."""

    def __init__(self, tokenizer: Tokenizer, stop: list[str], context: list[int] | None = None):
        self.tok = tokenizer
        # The last prompt tokens decide how the first generated token joins on (a space or not).
        self.context = list(context or [])[-4:]
        self.context_text = tokenizer.decode(self.context, skip_special_tokens=True)
        self.stop = [s for s in stop if s]
        self.ids: list[int] = []
        self.sent = 0  # characters of the text already returned
        self.stopped = False
        self.text = ""

    def update(self, token_id: int | None, final: bool = False) -> str:
        if token_id is not None:
            self.ids.append(token_id)
        text = self.tok.decode(self.context + self.ids, skip_special_tokens=True)
        if text.startswith(self.context_text):
            text = text[len(self.context_text) :]
        else:  # the context merged with new tokens differently: fall back to the tokens alone
            text = self.tok.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd") and not final:
            text = text[: len(text) - 1]  # an incomplete multi-byte character: wait for the rest
        if self.stop:
            start = max(0, self.sent - max(map(len, self.stop)))
            hits = [i for i in (text.find(s, start) for s in self.stop) if i >= 0]
            if hits:
                text = text[: min(hits)]
                self.stopped = True
                final = True
        self.text = text
        safe = len(text) if final else len(text) - self._held_back(text)
        delta = text[self.sent : safe] if safe > self.sent else ""
        self.sent = max(self.sent, safe)
        return delta

    def _held_back(self, text: str) -> int:
        """Length of the longest tail of `text` that is a proper prefix of some stop string."""
        best = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(text)), best, -1):
                if text.endswith(s[:n]):
                    best = n
                    break
        return best
