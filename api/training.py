"""TrainingRun spec, the training sections: the model shape, the optimizer and batch, FSDP2.

These are what the trainer computes with; the rest of the spec (data, checkpoints, resources,
scheduling) is in `trainingrun`. Rules that need the data or the model preset (vocabulary,
maxSeqLen) are checked by the trainer.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from capstan_api.common import ApiModel, cel

# Far above any model or batch built today, far below a typo: 1e12 is refused before it reaches a pod.
MAX_CONTEXT = 1 << 20
MAX_STEPS = 100_000_000
# Parameters each preset is named after: enough to size a checkpoint, not to build the model
# (capstan_trainer.model has the shapes).
PRESET_PARAMS = {"test": 1_000_000, "125m": 125_000_000, "350m": 350_000_000, "1b": 10**9, "8b": 8 * 10**9}


class ModelSpec(ApiModel):
    """A preset shape with optional explicit overrides; 0 means "the preset's value"."""

    preset: Literal["test", "125m", "350m", "1b", "8b"] = Field(
        default="125m",
        description="preset is the base shape: test (~1M parameters, for CPU tests), 125m, 350m, 1b, 8b.",
    )
    dim: int = Field(
        default=0, ge=0, le=65536, description="dim is the residual width; 0 keeps the preset's."
    )
    n_layers: int = Field(
        default=0, ge=0, le=1024, description="nLayers is the number of blocks; 0 keeps the preset's."
    )
    n_heads: int = Field(
        default=0, ge=0, le=1024, description="nHeads is the query head count; 0 keeps the preset's."
    )
    n_kv_heads: int = Field(
        default=0,
        ge=0,
        le=1024,
        description="nKvHeads is the key/value head count (divides nHeads); 0 keeps the preset's.",
    )
    ffn_dim: int = Field(
        default=0, ge=0, le=1 << 18, description="ffnDim is the SwiGLU hidden width; 0 keeps the preset's."
    )
    max_seq_len: int = Field(
        default=0,
        ge=0,
        le=MAX_CONTEXT,
        description="maxSeqLen is the longest context in tokens; 0 keeps the preset's.",
    )
    vocab_size: int = Field(
        default=0,
        ge=0,
        le=1 << 21,
        description="vocabSize is the embedding rows; 0 takes the dataset tokenizer's size.",
    )
    rope_theta: float = Field(
        default=0.0, ge=0, le=1e9, description="ropeTheta is the RoPE base; 0 keeps the preset's."
    )
    norm_eps: float = Field(
        default=0.0, ge=0, le=0.1, description="normEps is the RMSNorm epsilon; 0 keeps the preset's."
    )
    tie_embeddings: Literal["preset", "tied", "untied"] = Field(
        default="preset", description="tieEmbeddings shares the output projection with the embedding, or not."
    )

    def approx_params(self) -> int:
        """The preset's parameter count, scaled by the width and depth overrides (parameters grow
        with dim^2 x nLayers): an estimate for sizing checkpoints and grace periods."""
        from_preset = PRESET_PARAMS[self.preset]
        shape = _PRESET_SHAPE[self.preset]
        dim, layers = self.dim or shape[0], self.n_layers or shape[1]
        return int(from_preset * (dim / shape[0]) ** 2 * layers / shape[1])


# (dim, nLayers) of each preset, to scale PRESET_PARAMS by overrides.
_PRESET_SHAPE = {"test": (64, 2), "125m": (768, 12), "350m": (1024, 24), "1b": (2048, 16), "8b": (4096, 32)}


class OptimizerSpec(ApiModel):
    """AdamW with linear warmup and cosine decay; batch sizes in tokens and sequences."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "self.globalBatchTokens % (self.microBatch * self.seqLen) == 0",
                "globalBatchTokens must be divisible by microBatch x seqLen",
            ),
            ("self.minLr <= self.lr", "minLr must not exceed lr"),
            ("self.warmupSteps < self.totalSteps", "warmupSteps must be less than totalSteps"),
        )
    )

    global_batch_tokens: int = Field(
        default=524288,
        gt=0,
        le=1 << 30,
        description="globalBatchTokens is the tokens per optimizer step over all processes; a multiple "
        "of microBatch x seqLen x world size (gradient accumulation makes up the rest).",
    )
    micro_batch: int = Field(
        default=8, gt=0, le=4096, description="microBatch is the sequences per process per forward pass."
    )
    seq_len: int = Field(
        default=2048, gt=0, le=MAX_CONTEXT, description="seqLen is the training sequence length in tokens."
    )
    lr: float = Field(
        default=3e-4, gt=0, le=1, description="lr is the peak learning rate, reached after warmup."
    )
    min_lr: float = Field(
        default=3e-5, ge=0, le=1, description="minLr is the learning rate at the end of the cosine decay."
    )
    warmup_steps: int = Field(
        default=100, ge=0, le=MAX_STEPS, description="warmupSteps is the linear warmup length in steps."
    )
    total_steps: int = Field(
        default=1000, gt=0, le=MAX_STEPS, description="totalSteps is the number of optimizer steps to run."
    )
    weight_decay: float = Field(
        default=0.1, ge=0, le=1, description="weightDecay is AdamW's decoupled decay on matrices (not norms)."
    )
    betas: list[float] = Field(
        default_factory=lambda: [0.9, 0.95],
        min_length=2,
        max_length=2,
        description="betas are AdamW's (beta1, beta2), each in [0, 1).",
    )
    grad_clip: float = Field(
        default=1.0,
        ge=0,
        le=1e4,
        description="gradClip is the max global gradient norm; 0 disables clipping.",
    )
    seed: int = Field(
        default=1234,
        ge=0,
        le=2**32 - 1,
        description="seed fixes the initialisation and the data order (a pure function of seed, "
        "manifest and sequence index, whatever the world size).",
    )
    precision: Literal["auto", "bf16", "fp32"] = Field(
        default="auto",
        description="precision of parameters in compute: auto is bf16 (fp32 reduce) on GPU, fp32 on CPU.",
    )

    @model_validator(mode="after")
    def _check(self) -> OptimizerSpec:
        per_micro = self.micro_batch * self.seq_len
        if self.global_batch_tokens % per_micro:
            raise ValueError(
                f"globalBatchTokens must be divisible by microBatch x seqLen "
                f"({self.global_batch_tokens} % ({self.micro_batch} x {self.seq_len}) != 0)"
            )
        if self.min_lr > self.lr:
            raise ValueError(f"minLr must not exceed lr ({self.min_lr} > {self.lr})")
        if self.warmup_steps >= self.total_steps:
            raise ValueError(
                f"warmupSteps must be less than totalSteps ({self.warmup_steps} >= {self.total_steps})"
            )
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must each be in [0, 1), got {self.betas}")
        return self

    @property
    def global_batch_sequences(self) -> int:
        return self.global_batch_tokens // self.seq_len


class FsdpSpec(ApiModel):
    """FSDP2 options."""

    reshard_after_forward: bool = Field(
        default=True,
        description="reshardAfterForward frees gathered parameters after forward (less memory, "
        "one more all-gather in backward).",
    )
    activation_checkpointing: Literal["none", "full"] = Field(
        default="none", description="activationCheckpointing recomputes each block's activations in backward."
    )
    compile: bool = Field(default=False, description="compile applies torch.compile to each block.")
