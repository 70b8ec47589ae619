"""Export a checkpoint as a Hugging Face Llama directory that transformers and vLLM load unchanged.

    python -m capstan_trainer.export --checkpoint URI --out DIR [--dtype float32|bfloat16|float16]

URI is a step folder or a checkpoint root (newest committed step); DIR is a local path or any
fsspec URI. Parameter names already match LlamaForCausalLM's (minus `model.`) and rotary
embeddings use the rotate-half layout, so no permutation is needed. The checkpoint's capstan.json
travels along (with "checkpoint": the step folder exported) so the export keeps its lineage:
datasets, TrainingRun, step and `init`, the checkpoint a fine-tuning run started from.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from safetensors.torch import save

from capstan_api import exitcodes
from capstan_trainer import storage
from capstan_trainer.checkpoint import load_model
from capstan_trainer.model import ModelConfig

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def hf_config(cfg: ModelConfig, dtype: str, eos_id: int | None) -> dict:
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
        # Both forms: transformers 5 reads rope_parameters, older loaders (and vLLM) rope_theta.
        "rope_theta": cfg.rope_theta,
        "rope_parameters": {"rope_theta": cfg.rope_theta, "rope_type": "default"},
        "tie_word_embeddings": cfg.tie_embeddings,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "initializer_range": cfg.init_std,
        "bos_token_id": None,
        "eos_token_id": eos_id,
        "pad_token_id": None,
        "use_cache": True,
        "torch_dtype": dtype,
        "dtype": dtype,
    }


def export(checkpoint_uri: str, out: str, dtype: str = "float32") -> dict:
    """Write the HF directory; returns the config written."""
    model, meta = load_model(checkpoint_uri, dtype=DTYPES[dtype])
    cfg = model.cfg
    tensors = {}
    for name, t in model.state_dict().items():
        if name == "lm_head.weight":
            if cfg.tie_embeddings:
                continue  # tied: transformers re-ties it to the embedding
            tensors[name] = t.contiguous()
        else:
            tensors[f"model.{name}"] = t.contiguous()
    tok_text = storage.read_bytes(storage.join(meta["uri"], meta.get("tokenizer", "tokenizer.json")))
    eos_id = _eos_id(meta)
    config = hf_config(cfg, dtype, eos_id)
    files = {
        "config.json": json.dumps(config, indent=2) + "\n",
        "generation_config.json": json.dumps({"eos_token_id": eos_id, "do_sample": False}, indent=2) + "\n",
        "tokenizer_config.json": json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "model_max_length": cfg.max_seq_len,
                "eos_token": _token_text(tok_text, eos_id),
                "clean_up_tokenization_spaces": False,
            },
            indent=2,
        )
        + "\n",
        "capstan.json": json.dumps(lineage_meta(meta), indent=2) + "\n",
    }
    storage.write_bytes(
        storage.join(out, "model.safetensors"),
        save(tensors, metadata={"format": "pt", "capstan_step": str(meta["step"])}),
    )
    storage.write_bytes(storage.join(out, "tokenizer.json"), tok_text)
    for name, text in files.items():
        storage.write_bytes(storage.join(out, name), text.encode())
    return config


def lineage_meta(meta: dict) -> dict:
    """The checkpoint's capstan.json for the export: "uri" (where it was read) becomes
    "checkpoint"; a run that started from scratch says so with "init": null."""
    out = {k: v for k, v in meta.items() if k != "uri"}
    return {**out, "checkpoint": meta["uri"], "init": meta.get("init")}


def _eos_id(meta: dict) -> int | None:
    """The end-of-text id: recorded in capstan.json, else from a readable dataset manifest."""
    from capstan_trainer.shards import read_manifest

    if meta.get("eosId") is not None:
        return int(meta["eosId"])
    for ds in meta.get("dataset") or []:
        try:
            return read_manifest(ds["uri"]).eos_id
        except (OSError, ValueError, KeyError):
            continue
    return None


def _token_text(tokenizer_json: bytes, token_id: int | None) -> str | None:
    if token_id is None:
        return None
    from tokenizers import Tokenizer

    return Tokenizer.from_str(tokenizer_json.decode()).id_to_token(token_id)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="capstan_trainer.export", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="step folder or checkpoint root URI")
    p.add_argument("--out", required=True, help="output directory (path or fsspec URI)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    a = p.parse_args(argv)
    try:
        config = export(a.checkpoint, a.out, a.dtype)
    except FileNotFoundError as exc:
        print(f"--checkpoint: {exc}", file=sys.stderr)
        return exitcodes.INVALID_CONFIG
    print(
        json.dumps(
            {"out": a.out, "hidden_size": config["hidden_size"], "layers": config["num_hidden_layers"]}
        )
    )
    return exitcodes.OK


if __name__ == "__main__":
    raise SystemExit(main())
