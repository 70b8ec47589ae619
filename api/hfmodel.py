"""A Hugging Face Llama directory's `config.json` as a `ModelConfig`, and back. No torch: the
operator checks a TrainingRun's `init.huggingFace` with it before any pod starts, the trainer
builds the model from it, and the export writes what `hf_config` returns.

Only what the Capstan decoder computes is accepted: a field or value it would silently compute
differently (attention bias, another activation, another RoPE variant) is refused, naming the field.
"""

from __future__ import annotations

from capstan_api.modelshape import ModelConfig, RopeScaling
from capstan_api.training import ModelSpec

FIELD = "spec.init.huggingFace"

# Files an HF Llama directory holds; weights are one of the two safetensors forms.
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
TOKENIZER = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"

_REQUIRED = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
# Values that change the math; each must equal what the decoder does (None: field absent is fine).
_MUST_BE = {
    "model_type": ("llama",),
    "hidden_act": ("silu", None),
    "attention_bias": (False, None),
    "mlp_bias": (False, None),
    "pretraining_tp": (1, None),
    "attention_dropout": (0.0, None),  # the decoder has no dropout
}
_ROPE_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")


class UnsupportedConfig(ValueError):
    """config.json describes a model the Capstan decoder does not compute; names the field."""


def _rope(c: dict) -> tuple[float, RopeScaling | None]:
    """(rope_theta, scaling) from the legacy top-level form or transformers 5's rope_parameters."""
    params = c.get("rope_parameters") or {}
    scaling = c.get("rope_scaling") or {}
    theta = c.get("rope_theta") or params.get("rope_theta") or 10000.0
    # transformers 5 keeps the llama3 keys in rope_parameters; older configs in rope_scaling.
    where, src = ("rope_scaling", scaling) if scaling else ("rope_parameters", params)
    rope_type = src.get("rope_type") or src.get("type") or "default"
    if rope_type == "default":
        return float(theta), None
    if rope_type != "llama3":
        raise UnsupportedConfig(
            f"config.json {where}.rope_type: {rope_type!r} is not supported (only default and llama3)"
        )
    missing = [k for k in _ROPE_KEYS if src.get(k) is None]
    if missing:
        raise UnsupportedConfig(f"config.json {where}.{missing[0]}: required for rope_type llama3")
    low, high = float(src["low_freq_factor"]), float(src["high_freq_factor"])
    if high <= low:
        raise UnsupportedConfig(
            f"config.json {where}.high_freq_factor: {high} must exceed low_freq_factor {low}"
        )
    scale = RopeScaling(
        factor=float(src["factor"]),
        low_freq_factor=low,
        high_freq_factor=high,
        original_max_position_embeddings=int(src["original_max_position_embeddings"]),
    )
    return float(theta), scale


def config_from_hf(c: dict) -> ModelConfig:
    """The ModelConfig of an HF LlamaForCausalLM config.json; UnsupportedConfig names the field."""
    for key in _REQUIRED:
        if not isinstance(c.get(key), int) or c[key] < 1:
            raise UnsupportedConfig(f"config.json {key}: required, a positive integer (got {c.get(key)!r})")
    for key, allowed in _MUST_BE.items():
        if c.get(key) not in allowed:
            shown = ", ".join(repr(a) for a in allowed if a is not None)
            raise UnsupportedConfig(f"config.json {key}: {c.get(key)!r} is not supported (only {shown})")
    heads = c["num_attention_heads"]
    head_dim = c.get("head_dim")
    if head_dim is not None and head_dim * heads != c["hidden_size"]:
        raise UnsupportedConfig(
            f"config.json head_dim: {head_dim} x {heads} heads != hidden_size {c['hidden_size']} "
            "(the decoder derives head_dim = hidden_size / num_attention_heads)"
        )
    theta, scaling = _rope(c)
    cfg = ModelConfig(
        vocab_size=c["vocab_size"],
        dim=c["hidden_size"],
        n_layers=c["num_hidden_layers"],
        n_heads=heads,
        n_kv_heads=c.get("num_key_value_heads") or heads,
        ffn_dim=c["intermediate_size"],
        max_seq_len=c.get("max_position_embeddings", 2048),
        rope_theta=theta,
        norm_eps=c.get("rms_norm_eps", 1e-5),
        tie_embeddings=bool(c.get("tie_word_embeddings", False)),  # LlamaConfig's default
        init_std=c.get("initializer_range", 0.02),
        rope_scaling=scaling,
    )
    try:
        cfg.validate()
    except ValueError as exc:
        raise UnsupportedConfig(f"config.json: {exc}") from exc
    return cfg


def run_shape(model: ModelSpec, config: dict, uri: str) -> ModelConfig:
    """A TrainingRun's model with `init.huggingFace`: config.json's shape. spec.model must be left
    unset, except maxSeqLen, which may shorten the context (the rotary tables and the positions
    trained). UnsupportedConfig with the field (config.json's or spec.model's) in the message."""
    try:
        cfg = config_from_hf(config)
    except UnsupportedConfig as exc:
        raise UnsupportedConfig(f"{FIELD}: {uri}: {exc}") from exc
    given, defaults = (
        model.model_dump(exclude={"max_seq_len"}),
        ModelSpec().model_dump(exclude={"max_seq_len"}),
    )
    for name, default in defaults.items():
        if given[name] != default:
            alias = ModelSpec.model_fields[name].alias or name
            raise UnsupportedConfig(
                f"spec.model.{alias}: must be left unset with {FIELD} (the shape comes from its config.json)"
            )
    if model.max_seq_len > cfg.max_seq_len:
        raise UnsupportedConfig(
            f"spec.model.maxSeqLen: {model.max_seq_len} exceeds the model's max_position_embeddings "
            f"{cfg.max_seq_len}"
        )
    cfg.max_seq_len = model.max_seq_len or cfg.max_seq_len
    return cfg


def hf_config(cfg: ModelConfig, dtype: str, eos_ids: list[int]) -> dict:
    """config.json for transformers and vLLM. RoPE in both forms: transformers 5 reads
    rope_parameters, older loaders (and vLLM) rope_theta and rope_scaling."""
    rope = {"rope_theta": cfg.rope_theta, "rope_type": "default"}
    scaling = None
    if cfg.rope_scaling is not None:
        scaling = {"rope_type": "llama3", **{k: getattr(cfg.rope_scaling, k) for k in _ROPE_KEYS}}
        rope = {**scaling, "rope_theta": cfg.rope_theta}
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.dim,
        "intermediate_size": cfg.ffn_dim,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": scaling,
        "rope_parameters": rope,
        "tie_word_embeddings": cfg.tie_embeddings,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "initializer_range": cfg.init_std,
        "bos_token_id": None,
        "eos_token_id": eos_ids[0] if len(eos_ids) == 1 else (eos_ids or None),
        "pad_token_id": None,
        "use_cache": True,
        "torch_dtype": dtype,
        "dtype": dtype,
    }
