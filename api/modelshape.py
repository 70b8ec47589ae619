"""The decoder's shape: `ModelConfig`, the named presets, and a TrainingRun's model section turned
into one. No torch here: the operator sizes a run from it (`capstan_api.capacity`) and the trainer
builds the modules from it (`capstan_trainer.model`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from capstan_api.training import ModelSpec


@dataclass
class RopeScaling:
    """Llama 3's rotary frequency scaling (HF `rope_scaling` with rope_type "llama3"): long
    wavelengths are divided by `factor`, short ones kept, the band between interpolated."""

    factor: float
    """factor: how much longer the context is than the one pre-training used."""
    low_freq_factor: float
    """low_freq_factor: wavelengths above original_max_position_embeddings / this are scaled."""
    high_freq_factor: float
    """high_freq_factor: wavelengths below original_max_position_embeddings / this are kept."""
    original_max_position_embeddings: int
    """original_max_position_embeddings: the pre-training context length in tokens."""


@dataclass
class ModelConfig:
    """The decoder's shape; `PRESETS` names the common ones."""

    vocab_size: int = 32000
    """vocab_size: embedding rows; the tokenizer's vocabulary size (padded up is fine)."""
    dim: int = 768
    """dim: residual stream width (C in the shape comments); a multiple of n_heads."""
    n_layers: int = 12
    """n_layers: transformer blocks."""
    n_heads: int = 12
    """n_heads: query heads; head_dim = dim / n_heads, which must be even for rotary embeddings."""
    n_kv_heads: int = 12
    """n_kv_heads: key/value heads for grouped-query attention; divides n_heads (equal: plain MHA)."""
    ffn_dim: int = 2048
    """ffn_dim: hidden width of the SwiGLU MLP."""
    max_seq_len: int = 1024
    """max_seq_len: longest input in tokens; the rotary tables are built for this many positions."""
    rope_theta: float = 10000.0
    """rope_theta: base of the rotary frequencies (the 1b and 8b presets use 500000)."""
    norm_eps: float = 1e-5
    """norm_eps: added to the mean square inside each RMSNorm."""
    tie_embeddings: bool = False
    """tie_embeddings: True shares one matrix between the embedding and the output projection."""
    init_std: float = 0.02
    """init_std: std of the normal init; o_proj and down_proj use init_std / sqrt(2 * n_layers)."""
    rope_scaling: RopeScaling | None = field(default=None)
    """rope_scaling: Llama 3 frequency scaling (models imported from Hugging Face); None = plain RoPE."""

    def __post_init__(self) -> None:
        if isinstance(self.rope_scaling, dict):  # read back from a checkpoint's capstan.json
            self.rope_scaling = RopeScaling(**self.rope_scaling)

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def validate(self) -> None:
        if self.dim % self.n_heads:
            raise ValueError(f"model.dim {self.dim} is not divisible by model.nHeads {self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"model.nHeads {self.n_heads} is not divisible by model.nKvHeads {self.n_kv_heads}"
            )
        if self.head_dim % 2:
            raise ValueError(f"head dim {self.head_dim} must be even for rotary embeddings")

    def block_params(self) -> int:
        """Parameters of one block: attention, SwiGLU MLP and the two norms."""
        d, f, kv = self.dim, self.ffn_dim, self.n_kv_heads * self.head_dim
        return d * d * 2 + d * kv * 2 + 3 * d * f + 2 * d

    def num_params(self, exclude_embeddings: bool = False) -> int:
        d, L, V = self.dim, self.n_layers, self.vocab_size
        emb = V * d
        out = 0 if self.tie_embeddings else V * d
        total = L * self.block_params() + d + out + (0 if exclude_embeddings else emb)
        return total

    def to_dict(self) -> dict:
        out = asdict(self)
        if self.rope_scaling is None:
            # Absent rather than null: the run fingerprint of every model without it stays what
            # it was before the field existed, so their checkpoints still resume.
            del out["rope_scaling"]
        return out


# Shapes after Llama 3 / torchtitan; "test" is ~1M parameters for CPU tests.
PRESETS: dict[str, dict] = {
    "test": dict(
        dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=192, max_seq_len=256, tie_embeddings=True
    ),
    "125m": dict(
        dim=768, n_layers=12, n_heads=12, n_kv_heads=4, ffn_dim=2048, max_seq_len=2048, tie_embeddings=True
    ),
    "350m": dict(dim=1024, n_layers=24, n_heads=16, n_kv_heads=8, ffn_dim=2816, max_seq_len=2048),
    "1b": dict(
        dim=2048,
        n_layers=16,
        n_heads=32,
        n_kv_heads=8,
        ffn_dim=8192,
        max_seq_len=2048,
        rope_theta=500000.0,
        tie_embeddings=True,
    ),
    "8b": dict(
        dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, ffn_dim=14336, max_seq_len=8192, rope_theta=500000.0
    ),
}


def preset(name: str, **overrides) -> ModelConfig:
    if name not in PRESETS:
        raise ValueError(f"model.preset {name!r} is unknown; choose one of {sorted(PRESETS)}")
    cfg = ModelConfig(**{**PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}})
    cfg.validate()
    return cfg


def from_spec(m: ModelSpec, vocab_size: int) -> ModelConfig:
    """spec.model (a preset plus overrides, 0 = the preset's value) as a ModelConfig; `vocab_size`
    is used when spec.model.vocabSize is 0. ValueError for an unknown preset or an invalid shape."""
    overrides = dict(
        dim=m.dim,
        n_layers=m.n_layers,
        n_heads=m.n_heads,
        n_kv_heads=m.n_kv_heads,
        ffn_dim=m.ffn_dim,
        max_seq_len=m.max_seq_len,
        rope_theta=m.rope_theta,
        norm_eps=m.norm_eps,
    )
    kw = {k: v for k, v in overrides.items() if v}
    if m.tie_embeddings != "preset":
        kw["tie_embeddings"] = m.tie_embeddings == "tied"
    kw["vocab_size"] = m.vocab_size or vocab_size
    return preset(m.preset, **kw)
