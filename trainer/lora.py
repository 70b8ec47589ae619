"""LoRA (Hu et al. 2021) on our own decoder: a Linear that adds (alpha / rank) B A x to its
frozen W x, applied in place before FSDP2, and merged back into plain Linears for inference.

Hand-written rather than peft: peft would bring transformers and accelerate into the trainer
image for ~40 lines of arithmetic on a model that is not a transformers model; its layers also
rename the base weight (`base_layer.weight`), where here the base keeps its name, so the
init checkpoint, the HF import and the export read the same names with or without adapters.
The semantics are peft's: scaling = alpha / rank, A kaiming-uniform (a = sqrt 5, as nn.Linear
and peft), B zero, dropout on the adapters' input only.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from capstan_api.lora import LoraSpec

ADAPTER_NAMES = ("lora_A", "lora_B")


class LoRALinear(nn.Linear):
    """nn.Linear (its `weight` frozen) plus the adapters `lora_A` (rank, in) and `lora_B` (out, rank)."""

    def __init__(self, base: nn.Linear, rank: int, scaling: float, dropout: float):
        # Built on whatever device `base` is on (meta before FSDP2); the base weight is shared, not copied.
        super().__init__(base.in_features, base.out_features, bias=False, device="meta")
        self.weight = base.weight
        self.weight.requires_grad_(False)
        dev, dt = base.weight.device, base.weight.dtype
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, device=dev, dtype=dt))
        self.lora_B = nn.Parameter(torch.empty(base.out_features, rank, device=dev, dtype=dt))
        self.scaling = scaling
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.dropout(x, self.dropout, self.training) if self.dropout else x
        return F.linear(x, self.weight) + F.linear(F.linear(h, self.lora_A), self.lora_B) * self.scaling

    @torch.no_grad()
    def reset_adapters(self) -> None:
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """A plain Linear with W + scaling B A (computed in fp32)."""
        w = self.weight.float() + (self.lora_B.float() @ self.lora_A.float()) * self.scaling
        out = nn.Linear(self.in_features, self.out_features, bias=False, device="meta")
        out.weight = nn.Parameter(w.to(self.weight.dtype), requires_grad=False)
        return out


def apply_lora(model: nn.Module, spec: LoraSpec) -> int:
    """Freeze every parameter, then give each targeted Linear of every block trainable adapters.
    Call on the meta model before FSDP2 (the adapters join their block's FSDP unit) and
    `init_adapters` after the weights are initialised. Returns the adapters' parameter count."""
    model.requires_grad_(False)
    targets = set(spec.target_modules)
    added = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if name in targets and type(child) is nn.Linear:
                lora = LoRALinear(child, spec.rank, spec.scaling, spec.dropout)
                setattr(parent, name, lora)
                added += lora.lora_A.numel() + lora.lora_B.numel()
    if not added:
        raise ValueError(f"spec.lora.targetModules: none of {sorted(targets)} is a Linear of the model")
    return added


def init_adapters(model: nn.Module) -> None:
    """A kaiming-uniform, B zero: the adapted model starts as the base model exactly."""
    for m in model.modules():
        if isinstance(m, LoRALinear):
            m.reset_adapters()


@torch.no_grad()
def merge_lora(model: nn.Module) -> int:
    """Replace each LoRALinear by a plain Linear holding its merged weight (in place, on an
    unsharded model); returns how many were merged. Its state_dict is then the base model's."""
    merged = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LoRALinear):
                setattr(parent, name, child.merged())
                merged += 1
    return merged


def is_adapter(name: str) -> bool:
    """A state-dict key of an adapter (absent from a base checkpoint or an HF model)."""
    return name.rsplit(".", 1)[-1] in ADAPTER_NAMES
