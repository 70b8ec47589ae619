"""The one chat rendering: the Jinja chat template applied to messages, as the server renders a
prompt and as data preparation renders a training conversation, so both see the same text.

`assistant_spans` finds, by rendering growing prefixes of the conversation, the characters each
assistant turn adds after the generation prompt: what the model is asked to produce when served.
"""

from __future__ import annotations

from collections.abc import Sequence

from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer

# The Dataset default (spec.tokenizer.chatTemplate); re-exported so callers need one import.
from capstan_api.tokenizer import DEFAULT_CHAT_TEMPLATE

# Options as transformers' apply_chat_template uses them, so an exported template renders alike.
_jinja = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
BOS = "<|begin_of_text|>"  # the template's bos_token when the tokenizer has it, else ""


def template_of(tokenizer_config: dict) -> str:
    """The template a tokenizer_config.json names, else the Dataset default."""
    return tokenizer_config.get("chat_template") or DEFAULT_CHAT_TEMPLATE


def bos_token(tok: Tokenizer) -> str:
    """`<|begin_of_text|>` when the vocabulary has it, else nothing (the export writes the same)."""
    return BOS if tok.token_to_id(BOS) is not None else ""


def render(
    template: str,
    messages: Sequence[dict],
    *,
    add_generation_prompt: bool,
    bos_token: str,
    eos_token: str,
) -> str:
    """`messages` are {"role", "content"} dicts; template errors propagate to the caller."""
    return _jinja.from_string(template).render(
        messages=[{"role": m["role"], "content": m["content"]} for m in messages],
        add_generation_prompt=add_generation_prompt,
        bos_token=bos_token,
        eos_token=eos_token,
    )


def assistant_spans(
    template: str, messages: Sequence[dict], *, bos_token: str, eos_token: str, first: int = 0
) -> tuple[str, list[tuple[int, int]]]:
    """(the whole conversation rendered, [start, end) character spans of the assistant turns).

    A span runs from the end of the generation prompt to the end of the turn, end-of-turn text
    (the eos token in the default template) included, trailing whitespace not: the server stops
    at eos, so the model never produces what the template puts after it."""

    def at(k: int, gen: bool) -> str:
        return render(
            template, messages[:k], add_generation_prompt=gen, bos_token=bos_token, eos_token=eos_token
        )

    full = at(len(messages), False)
    spans = []
    for k, m in enumerate(messages):
        if m["role"] != "assistant" or k < first:  # turns before `first` are a prompt's
            continue
        prompt, upto = at(k, True), at(k + 1, False)
        if not (upto.startswith(prompt) and full.startswith(upto)):
            raise ValueError(
                "chatTemplate: rendering a conversation's first turns does not give a prefix of the "
                f"whole conversation (at message {k}), so assistant turns cannot be located"
            )
        end = len(upto.rstrip())
        if end > len(prompt):
            spans.append((len(prompt), end))
    return full, spans


def template_tokens(tokenizer: Tokenizer, eos_id: int | None) -> tuple[str, str]:
    """(bos_token, eos_token) texts the template gets for a `tokenizers.Tokenizer`."""
    return bos_token(tokenizer), "" if eos_id is None else (tokenizer.id_to_token(eos_id) or "")
