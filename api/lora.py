"""TrainingRun spec.lora: low-rank adapters (Hu et al. 2021) on the decoder's Linear layers.

The base weights stay frozen and each targeted Linear learns y = W x + (alpha / rank) B A x,
peft's semantics: scaling = alpha / rank, A (rank x in) and B (out x rank), B starting at zero so
step 0 is the base model exactly. The export merges them (W + scaling B A): a plain Llama.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from capstan_api.common import ApiModel, cel
from capstan_api.modelshape import ModelConfig

# The decoder's Linear layers by their HF Llama names (capstan_trainer.model).
TargetModule = Annotated[
    Literal["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    # maxLength bounds the API server's cost estimate of the uniqueness rule (unbounded strings
    # are costed at the request size limit, which a quadratic rule would exceed).
    Field(json_schema_extra={"maxLength": 16}),
]
MAX_RANK = 1024


class LoraSpec(ApiModel):
    """Low-rank adapters; absent means full fine-tuning."""

    rank: int = Field(
        default=8, ge=1, le=MAX_RANK, description="rank is r, the adapters' inner width (peft's r)."
    )
    alpha: float = Field(
        default=0,
        ge=0,
        le=1e6,
        description="alpha scales the adapters' output by alpha / rank (peft's lora_alpha); 0 means "
        "alpha = rank (scaling 1).",
    )
    target_modules: list[TargetModule] = Field(
        default_factory=lambda: ["q_proj", "v_proj"],
        min_length=1,
        max_length=7,
        description="targetModules are the Linear layers (by name, in every block) that get adapters: "
        "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj; default q_proj and v_proj, "
        "peft's default for Llama.",
        json_schema_extra=cel(
            ("self.all(m, self.exists_one(n, n == m))", "targetModules must not repeat a name")
        ),
    )
    dropout: float = Field(
        default=0,
        ge=0,
        lt=1,
        description="dropout is the probability of zeroing the adapters' input in training (peft's "
        "lora_dropout), 0 to <1.",
    )

    @field_validator("target_modules")
    @classmethod
    def _once_each(cls, names: list[str]) -> list[str]:
        twice = sorted({m for m in names if names.count(m) > 1})
        if twice:
            raise ValueError(f"targetModules must not repeat a name (got {', '.join(twice)} twice)")
        return names

    def adapter_params(self, cfg: ModelConfig) -> int:
        """rank x (in + out) of each targeted Linear, over the blocks: what trains."""
        d, f = cfg.dim, cfg.ffn_dim
        q, kv = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
        width = {
            "q_proj": d + q,
            "k_proj": d + kv,
            "v_proj": d + kv,
            "o_proj": q + d,
            "gate_proj": d + f,
            "up_proj": d + f,
            "down_proj": f + d,
        }
        return cfg.n_layers * self.rank * sum(width[t] for t in self.target_modules)

    @property
    def scaling(self) -> float:
        """alpha / rank, what the adapters' output is multiplied by."""
        return (self.alpha or self.rank) / self.rank
