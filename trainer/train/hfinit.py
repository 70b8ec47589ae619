"""Start a TrainingRun from a Hugging Face Llama directory (`spec.init.huggingFace`).

Before any process group: the shape comes from its config.json (an unsupported field is a
ConfigError naming it), spec.model may only shorten the context, and the datasets must have been
tokenized with the model's own tokenizer.json (same sha256). After sharding: rank 0 reads the
safetensors (one file or the shards of an index) through the inference loader and FSDP2's
`set_model_state_dict` broadcasts each tensor and keeps every rank's slice, so the other ranks
never hold the whole model.
"""

from __future__ import annotations

import hashlib
import json

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

from capstan_api import hfmodel
from capstan_api.trainingrun import TrainingRunSpec
from capstan_trainer import storage
from capstan_trainer.model import ModelConfig
from capstan_trainer.model_load import hf_weight_files, read_hf_state

FIELD = hfmodel.FIELD


class HfInitError(ValueError):
    """A config problem; the caller turns it into its ConfigError."""


def model_config(spec: TrainingRunSpec) -> ModelConfig:
    """The HF model's shape (hfmodel.run_shape: spec.model may only shorten the context)."""
    uri = spec.init.hugging_face
    try:
        config = json.loads(storage.read_bytes(storage.join(uri, hfmodel.CONFIG)))
    except (OSError, ValueError) as exc:
        raise HfInitError(f"{FIELD}: cannot read {storage.join(uri, hfmodel.CONFIG)}: {exc}") from exc
    try:
        return hfmodel.run_shape(spec.model, config, uri)
    except hfmodel.UnsupportedConfig as exc:
        raise HfInitError(str(exc)) from exc


def tokenizer_uri(spec: TrainingRunSpec, dataset_sha256: str, dataset_uri: str) -> str:
    """The model's tokenizer.json, checked to be the one the datasets were tokenized with."""
    uri = storage.join(spec.init.hugging_face, hfmodel.TOKENIZER)
    try:
        sha = hashlib.sha256(storage.read_bytes(uri)).hexdigest()
    except (OSError, ValueError) as exc:
        raise HfInitError(f"{FIELD}: cannot read {uri}: {exc}") from exc
    if sha != dataset_sha256:
        raise HfInitError(
            f"spec.datasets: {dataset_uri} was tokenized with tokenizer sha256 {dataset_sha256[:12] or '?'}, "
            f"but the model {spec.init.hugging_face} has tokenizer.json sha256 {sha[:12]}; prepare the "
            f"Dataset with spec.tokenizer.fromModel: {spec.init.hugging_face}"
        )
    return uri


def check_weights(uri: str) -> None:
    """The safetensors are all there (before torchrun: a missing shard is a config error, not a
    crash to restart)."""
    try:
        missing = [n for n in hf_weight_files(uri) if not storage.exists(storage.join(uri, n))]
    except (OSError, ValueError, KeyError) as exc:
        raise HfInitError(f"{FIELD}: {exc}") from exc
    if missing:
        raise HfInitError(f"{FIELD}: {uri}: weight shard(s) missing: {', '.join(missing[:3])}")


def stop_ids(uri: str) -> list[int]:
    """The model's end tokens (generation_config.json, else config.json), for the export."""
    for name in ("generation_config.json", hfmodel.CONFIG):
        try:
            eos = json.loads(storage.read_bytes(storage.join(uri, name))).get("eos_token_id")
        except (OSError, ValueError):
            continue
        if eos is not None:
            return [int(i) for i in (eos if isinstance(eos, list) else [eos])]
    return []


@torch.no_grad()
def load_weights(model: torch.nn.Module, uri: str, cfg: ModelConfig, rank: int) -> None:
    """Every rank calls this after the model is sharded and initialised."""
    full = {}
    if rank == 0:
        # HF checkpoints are mostly bf16; the trainer keeps fp32 master weights (FSDP2 casts for compute).
        dtype = next(model.parameters()).dtype
        full = {k: v.to(dtype) for k, v in read_hf_state(uri, cfg).items()}
    # Not strict: LoRA adapters are not in an HF model (they keep their B = 0 init);
    # read_hf_state has already refused a missing or extra base tensor.
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, strict=False)
    set_model_state_dict(model, full, options=options)
