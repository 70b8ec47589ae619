"""Load a model for inference (evaluation and serving) from a checkpoint or a Hugging Face export.

A URI is either a DCP checkpoint (a step folder, or a root whose newest committed step is used)
or an export directory (`config.json` + `model.safetensors`, as `capstan_trainer.export` writes).
Both come with their tokenizer; the chat template is looked up beside it, then in the training
datasets' `tokenizer_config.json`, else the Dataset default.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

import torch
from safetensors.torch import load as load_safetensors
from tokenizers import Tokenizer

from capstan_api import hfmodel
from capstan_trainer import chat_template, storage
from capstan_trainer.model import ModelConfig, Transformer

log = logging.getLogger("capstan.model_load")


@dataclass
class LoadedModel:
    model: Transformer
    tokenizer: Tokenizer
    eos_id: int | None
    """eos_id: the end-of-text token; generation stops at it and perplexity windows start with it."""
    chat_template: str
    meta: dict = field(default_factory=dict)
    """meta: capstan.json of the checkpoint (an export carries a copy; without one, what config.json
    says), with "uri"."""

    @property
    def max_seq_len(self) -> int:
        return self.model.cfg.max_seq_len

    def token_text(self, token_id: int | None) -> str:
        return "" if token_id is None else (self.tokenizer.id_to_token(token_id) or "")


def device_for(name: str) -> torch.device:
    """auto: cuda when present; cuda without a GPU is an error, not a silent fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device cuda was requested but no GPU is visible to torch")
    return torch.device(name)


def is_hf_export(uri: str) -> bool:
    return storage.exists(storage.join(uri, "config.json"))


def load(
    uri: str, device: torch.device | str = "cpu", dtype=torch.float32, tokenizer_uri: str = ""
) -> LoadedModel:
    if is_hf_export(uri):
        model, meta, tok_uri, tok_config = _load_export(uri, device, dtype)
    else:
        # Imported here: torch.distributed.checkpoint adds ~1.3 s to every server start, and an
        # HF export does not need it.
        from capstan_trainer.checkpoint import load_model

        model, meta = load_model(uri, device=device, dtype=dtype)
        tok_uri = storage.join(meta["uri"], meta.get("tokenizer", "tokenizer.json"))
        tok_config = dataset_tokenizer_config(meta)
    tok_uri = tokenizer_uri or tok_uri
    try:
        tokenizer = Tokenizer.from_str(storage.read_bytes(tok_uri).decode())
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{tok_uri}: tokenizer.json not found") from exc
    eos_id = meta.get("eosId")
    if eos_id is None and tok_config.get("eos_token"):
        eos_id = tokenizer.token_to_id(tok_config["eos_token"])
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        eos_id=eos_id,
        chat_template=chat_template.template_of(tok_config),
        meta=meta,
    )


def read_hf_config(uri: str) -> ModelConfig:
    """The ModelConfig of the HF directory at `uri`; UnsupportedConfig names a refused field."""
    return hfmodel.config_from_hf(json.loads(storage.read_bytes(storage.join(uri, hfmodel.CONFIG))))


def hf_weight_files(uri: str) -> list[str]:
    """model.safetensors, or the shards model.safetensors.index.json lists (FileNotFoundError
    naming both when there is neither)."""
    if storage.exists(storage.join(uri, hfmodel.WEIGHTS)):
        return [hfmodel.WEIGHTS]
    index_uri = storage.join(uri, hfmodel.WEIGHTS_INDEX)
    try:
        index = json.loads(storage.read_bytes(index_uri))
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{uri}: neither {hfmodel.WEIGHTS} nor {hfmodel.WEIGHTS_INDEX}") from exc
    return sorted(set(index["weight_map"].values()))


def read_hf_state(uri: str, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """The weights of the HF directory at `uri` under the decoder's names (no `model.` prefix),
    from model.safetensors or, when there is none, the shards model.safetensors.index.json lists.
    A tied model gets lm_head.weight as the embedding; a missing or extra tensor is a ValueError."""
    state: dict[str, torch.Tensor] = {}
    for name in hf_weight_files(uri):
        try:
            tensors = load_safetensors(storage.read_bytes(storage.join(uri, name)))
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"{storage.join(uri, name)}: weights not found") from exc
        # Older exports also saved each layer's rotary inv_freq buffer; the decoder computes it.
        state.update({k.removeprefix("model."): v for k, v in tensors.items() if not k.endswith(".inv_freq")})
    if cfg.tie_embeddings:
        state["lm_head.weight"] = state.get("lm_head.weight", state.get("embed_tokens.weight"))
    with torch.device("meta"):
        expected = Transformer(cfg).state_dict()
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or extra:
        raise ValueError(
            f"{uri}: weights do not match config.json (missing {missing[:3]}, unexpected {extra[:3]})"
        )
    for k, v in expected.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise ValueError(
                f"{uri}: {k} has shape {tuple(state[k].shape)}, config.json implies {tuple(v.shape)}"
            )
    return state


def _load_export(uri: str, device, dtype) -> tuple[Transformer, dict, str, dict]:
    config = json.loads(storage.read_bytes(storage.join(uri, hfmodel.CONFIG)))
    cfg = hfmodel.config_from_hf(config)
    state = read_hf_state(uri, cfg)
    with torch.device("meta"):
        model = Transformer(cfg)
    model.load_state_dict(state, assign=True)  # the file's tensors, not a second copy
    model.tie_weights()
    model.init_rope(torch.device("cpu"))  # the rotary buffers are still on meta
    model.to(device=device, dtype=dtype)
    model.init_rope(torch.device(device))
    model.eval()
    tok_config = _read_json(storage.join(uri, "tokenizer_config.json"))
    meta = {
        **_read_json(storage.join(uri, "capstan.json")),  # lineage, when the export carries it
        "uri": uri.rstrip("/"),
        "model": cfg.to_dict(),
        "eosId": _first(config.get("eos_token_id")),
        "format": "hf",
    }
    return model, meta, storage.join(uri, "tokenizer.json"), tok_config


def _first(eos):
    """Llama 3 configs list several end tokens; the first is the end-of-text one."""
    return eos[0] if isinstance(eos, list) and eos else eos


def dataset_tokenizer_config(meta: dict) -> dict:
    """tokenizer_config.json of the first training dataset that has one (chat template, eos)."""
    for ds in meta.get("dataset") or []:
        base = ds.get("uri", "")
        base = base.rsplit("/", 1)[0] if base.endswith(".json") else base
        found = _read_json(storage.join(base, "tokenizer_config.json")) if base else {}
        if found:
            return found
    return {}


def _read_json(uri: str) -> dict:
    try:
        return json.loads(storage.read_bytes(uri))
    except (FileNotFoundError, OSError, ValueError):
        return {}
