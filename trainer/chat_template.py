"""The chat template: which one a model uses, and rendering it exactly as transformers'
`apply_chat_template` does (a sandboxed Jinja environment with trim_blocks and lstrip_blocks).

One place for the server (capstan_trainer.serve), the export (its tokenizer_config.json carries
the template and the special tokens this renders with) and chat-data tokenization, so a prompt
renders the same everywhere the model is used."""

from __future__ import annotations

from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer

# The Dataset default (spec.tokenizer.chatTemplate); re-exported so callers need one import.
from capstan_api.tokenizer import DEFAULT_CHAT_TEMPLATE

BOS = "<|begin_of_text|>"

_jinja = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)


def template_of(tokenizer_config: dict) -> str:
    """The template a tokenizer_config.json names, else the Dataset default."""
    return tokenizer_config.get("chat_template") or DEFAULT_CHAT_TEMPLATE


def bos_token(tok: Tokenizer) -> str:
    """`<|begin_of_text|>` when the vocabulary has it, else nothing (the export writes the same)."""
    return BOS if tok.token_to_id(BOS) is not None else ""


def render(
    template: str, messages: list[dict], bos: str, eos: str, add_generation_prompt: bool = True
) -> str:
    """The prompt text; jinja2 errors propagate (the caller says whose template failed)."""
    return _jinja.from_string(template).render(
        messages=messages, add_generation_prompt=add_generation_prompt, bos_token=bos, eos_token=eos
    )
