"""spec.lora's defaults follow peft's semantics: scaling = alpha / rank, q_proj and v_proj."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from capstan_api.lora import LoraSpec


def test_defaults_are_peft_llama_ones_and_scaling_is_alpha_over_rank():
    spec = LoraSpec()
    assert (spec.rank, spec.target_modules, spec.dropout, spec.scaling) == (8, ["q_proj", "v_proj"], 0, 1.0)
    assert LoraSpec(rank=4, alpha=16).scaling == 4.0
    assert LoraSpec(rank=16).scaling == 1.0  # alpha 0: alpha = rank


def test_an_unknown_module_is_refused_naming_the_choices():
    with pytest.raises(ValidationError, match="q_proj.*down_proj"):
        LoraSpec.model_validate({"targetModules": ["qkv"]})
