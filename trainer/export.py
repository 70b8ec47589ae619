"""Export a checkpoint as a Hugging Face Llama directory that transformers and vLLM load unchanged.

    python -m capstan_trainer.export --checkpoint URI --out DIR [--dtype float32|bfloat16|float16]

URI is a step folder or a checkpoint root (newest committed step); DIR is a local path or any
fsspec URI. Parameter names already match LlamaForCausalLM's (minus `model.`) and rotary
embeddings use the rotate-half layout, so no permutation is needed. The checkpoint's capstan.json
travels along (with "checkpoint": the step folder exported) so the export keeps its lineage:
datasets, TrainingRun, step and `init`, the checkpoint a fine-tuning run started from.

tokenizer_config.json carries the chat template (and bos/eos/pad) of the training dataset's
tokenizer_config.json, else the Dataset default, so `apply_chat_template` in transformers and
vLLM renders the prompt the built-in server renders. DIR/EXPORTED (capstan_api.files.ExportMarker)
is removed first and written last: a folder without it is half-written. The operator exports a
step folder to `<step folder>/hf` this way before serving it with vLLM.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from safetensors.torch import save

from capstan_api import exitcodes, files
from capstan_api.hfmodel import hf_config
from capstan_trainer import chat_template, storage
from capstan_trainer.checkpoint import load_model
from capstan_trainer.model_load import dataset_tokenizer_config

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def export(checkpoint_uri: str, out: str, dtype: str = "float32") -> dict:
    """Write the HF directory, its EXPORTED marker last; returns the config written."""
    marker_uri = storage.join(out, files.EXPORT_MARKER)
    storage.remove(marker_uri)  # a rewrite must never look whole half-way
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
    stops = stop_ids(eos_id, meta)
    config = hf_config(cfg, dtype, stops)
    files_out = {
        "config.json": _json(config),
        # A list, as Llama 3's: generation stops at any of them (the chat template ends turns with eos).
        "generation_config.json": _json({"eos_token_id": stops, "do_sample": False}),
        "tokenizer_config.json": _json(
            tokenizer_config(tok_text, dataset_tokenizer_config(meta), eos_id, cfg.max_seq_len)
        ),
        "capstan.json": _json(lineage_meta(meta)),
    }
    storage.write_bytes(
        storage.join(out, "model.safetensors"),
        save(tensors, metadata={"format": "pt", "capstan_step": str(meta["step"])}),
    )
    storage.write_bytes(storage.join(out, "tokenizer.json"), tok_text)
    for name, text in files_out.items():
        storage.write_bytes(storage.join(out, name), text.encode())
    marker = files.ExportMarker(
        checkpoint=meta["uri"],
        step=meta["step"],
        dtype=dtype,
        files=sorted(["model.safetensors", "tokenizer.json", *files_out]),
    )
    storage.write_bytes(marker_uri, marker.to_json().encode())
    return config


def tokenizer_config(tokenizer_json: bytes, dataset_config: dict, eos_id: int | None, max_len: int) -> dict:
    """tokenizer_config.json for transformers and vLLM: the dataset's chat template and special
    tokens (bos and pad only when in the vocabulary), eos from the checkpoint. Without a dataset
    config, bos is `<|begin_of_text|>` when the vocabulary has it, as the built-in server renders."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(tokenizer_json.decode())

    def known(token: str | None) -> str | None:
        return token if token and tok.token_to_id(token) is not None else None

    eos = tok.id_to_token(eos_id) if eos_id is not None else known(dataset_config.get("eos_token"))
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": max_len,
        "bos_token": known(dataset_config.get("bos_token") or chat_template.BOS),
        "eos_token": eos,
        "pad_token": known(dataset_config.get("pad_token")),
        "chat_template": chat_template.template_of(dataset_config),
        "clean_up_tokenization_spaces": False,
    }


def stop_ids(eos_id: int | None, meta: dict) -> list[int]:
    """The end-of-text id, then the other end tokens of the HF model a run started from."""
    out = [] if eos_id is None else [eos_id]
    return out + [i for i in meta.get("stopIds") or [] if i not in out]


def _json(doc: dict) -> str:
    return json.dumps(doc, indent=2) + "\n"


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
