"""A tiny trained model with its dataset, checkpoint and Hugging Face export, for the evaluation
and serving tests. Built once per session (a few seconds on CPU).

The language: words "w0".."w99"; each document counts upwards (next word +1 with probability
0.85, else +2, wrapping at 100), so a trained model continues "w5 w6 w7" with "w8". Documents end
with <|end_of_text|>, as data preparation writes them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.fsspec_filesystem import FsspecWriter

from capstan_api.drift import PromptStats
from capstan_api.tokenizer import DEFAULT_CHAT_TEMPLATE
from capstan_trainer import shards, storage
from capstan_trainer.checkpoint import load_model
from capstan_trainer.export import export
from capstan_trainer.model import Transformer, preset
from hack import hf_model

# The words and Llama 3's special tokens: the same vocabulary as the random HF model hack makes.
WORDS, SPECIALS = hf_model.WORDS, hf_model.SPECIALS
EOS = WORDS + SPECIALS.index("<|end_of_text|>")
MAX_SEQ_LEN = 128
STEPS = 100


@dataclass(frozen=True)
class TinyModel:
    dataset_uri: str
    checkpoint_uri: str
    """checkpoint_uri: the step folder."""
    export_uri: str
    validation_texts: list[str]


def tokenizer_json() -> str:
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

    vocab = {f"w{i}": i for i in range(WORDS)} | {t: WORDS + i for i, t in enumerate(SPECIALS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|unk|>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS])
    return tok.to_str()


def documents(n: int, rng: np.random.Generator) -> list[list[int]]:
    docs = []
    for _ in range(n):
        length = int(rng.integers(6, 48))
        steps = np.where(rng.random(length) < 0.85, 1, 2)
        docs.append(((np.cumsum(steps) + rng.integers(WORDS)) % WORDS).tolist())
    return docs


def _write_dataset(uri: str, train: list[list[int]], validation: list[list[int]], tok: bytes) -> None:
    splits = {}
    for name, docs in (("train", train), ("validation", validation)):
        flat = np.array([t for d in docs for t in (*d, EOS)], dtype=np.uint16)
        data, digest = shards.encode_shard(flat, "uint16")
        storage.write_bytes(storage.join(uri, f"{name}-00000.bin"), data)
        splits[name] = shards.SplitInfo([shards.ShardInfo(f"{name}-00000.bin", len(flat), digest)], len(docs))
    manifest = shards.Manifest(
        dtype="uint16",
        vocab_size=WORDS + len(SPECIALS),
        eos_id=EOS,
        tokenizer={"path": "tokenizer.json", "sha256": hashlib.sha256(tok).hexdigest()},
        splits=splits,
        fingerprint="tiny-counting-v1",
        stats={
            "licence": {"keptByLicence": {"CC0-1.0": len(train) + len(validation)}},
            "promptStats": _prompt_stats(validation).to_wire(),
        },
    )
    storage.write_bytes(storage.join(uri, "manifest.json"), manifest.to_json().encode())
    storage.write_bytes(storage.join(uri, "tokenizer.json"), tok)
    config = {
        "eos_token": "<|end_of_text|>",
        "bos_token": "<|begin_of_text|>",
        "chat_template": DEFAULT_CHAT_TEMPLATE,
    }
    storage.write_bytes(storage.join(uri, "tokenizer_config.json"), json.dumps(config).encode())
    storage.write_bytes(
        storage.join(uri, "datasheet.md"), b"# Datasheet: counting\nGenerated counting text.\n"
    )


def _prompt_stats(docs: list[list[int]]) -> PromptStats:
    """What the preparation records for a validation split (a word-level vocabulary: no byte tokens)."""
    stats = PromptStats()
    for d in docs:
        stats.add(len(d), 0)
    return stats


@torch.no_grad()
def _validation_loss(model: Transformer, docs: list[list[int]]) -> float:
    """Mean next-token loss over the validation stream in 64-token windows, as the trainer's
    evaluation measures it."""
    stream = torch.tensor([t for d in docs for t in (*d, EOS)])
    T = 64
    n = (len(stream) - 1) // T
    x, y = stream[: n * T].view(n, T), stream[1 : n * T + 1].view(n, T)
    return float(torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten()))


def _train(train: list[list[int]], seed: int) -> Transformer:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a busy 2-core machine more threads are ten times slower
    try:
        return _train_steps(train, seed)
    finally:
        torch.set_num_threads(threads)


def _train_steps(train: list[list[int]], seed: int) -> Transformer:
    torch.manual_seed(seed)
    model = Transformer(preset("test", vocab_size=WORDS + len(SPECIALS), max_seq_len=MAX_SEQ_LEN))
    model.init_weights(seed)
    stream = torch.tensor([t for d in train for t in (*d, EOS)])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    T, B = 64, 8
    for _ in range(STEPS):
        starts = torch.randint(0, len(stream) - T - 1, (B,), generator=gen)
        x = torch.stack([stream[s : s + T] for s in starts])
        y = torch.stack([stream[s + 1 : s + T + 1] for s in starts])
        loss = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def build(root: str, seed: int = 0) -> TinyModel:
    """The model, its dataset and export under the folder URI `root` (file:// or s3://)."""
    rng = np.random.default_rng(seed)
    train, validation = documents(600, rng), documents(24, rng)
    tok = tokenizer_json().encode()
    dataset = f"{root}/dataset"
    _write_dataset(dataset, train, validation, tok)
    t0 = time.monotonic()
    model = _train(train, seed)
    seconds = time.monotonic() - t0
    step = f"{root}/checkpoints/step-{STEPS:08d}"
    writer = FsspecWriter(step, **storage.storage_options(step))
    dcp.save({"model": model.state_dict()}, storage_writer=writer, no_dist=True)
    meta = {
        "step": STEPS,
        "model": model.cfg.to_dict(),
        "tokenizer": "tokenizer.json",
        "dataset": [{"uri": dataset, "weight": 1.0, "fingerprint": "tiny-counting-v1"}],
        "trainingRun": "tiny",
        "seqLen": 64,
        "eosId": EOS,
        # What _train_steps did, as the trainer records it (the model card reads these).
        "optimizer": {
            "lr": 3e-3,
            "weightDecay": 0.0,
            "totalSteps": STEPS,
            "microBatch": 8,
            "seqLen": 64,
            "seed": seed,
        },
        "precision": "float32",
        "validation": {"evalLoss": _validation_loss(model, validation), "overfitting": False},
        "compute": {
            "processSeconds": seconds,
            "processHours": seconds / 3600,
            "gpuHours": 0.0,
            "device": "cpu",
            "worldSize": 1,
            "plannedGpuHours": None,
            "tokensSeen": STEPS * 8 * 64,
        },
    }
    storage.write_bytes(storage.join(step, "capstan.json"), json.dumps(meta).encode())
    storage.write_bytes(storage.join(step, "tokenizer.json"), tok)
    storage.write_bytes(storage.join(step, "COMMITTED"), b"done\n")
    out = f"{root}/export"
    export(step, out)
    texts = [" ".join(f"w{t}" for t in d) for d in validation]
    return TinyModel(dataset, step, out, texts)


_built: dict[str, TinyModel] = {}


def session_model(tmp_path_factory) -> TinyModel:
    """One TinyModel per test session in a local folder, shared by every test folder that asks."""
    if "file" not in _built:
        _built["file"] = build(f"file://{tmp_path_factory.mktemp('tiny-model')}")
    return _built["file"]


def session_model_s3(bucket: str) -> TinyModel:
    """One TinyModel per test session under the S3 bucket URI `bucket`: what pods on the local
    cluster read, since they run from their images and see none of the node's folders."""
    if "s3" not in _built:
        _built["s3"] = build(f"{bucket}/tiny-model")
    return _built["s3"]


@functools.cache
def _load_checkpoint(uri: str) -> Transformer:
    return load_model(uri)[0]


def trainer_model(tiny: TinyModel) -> Transformer:
    """The trainer's model loaded from the checkpoint (not the export), once per session."""
    return _load_checkpoint(tiny.checkpoint_uri)


def greedy_reference(tiny: TinyModel, prompt_ids: list[int], steps: int) -> list[int]:
    """Greedy decode with the trainer's model and a full forward per token (no cache)."""
    model = trainer_model(tiny)
    ids = list(prompt_ids)
    with torch.no_grad():
        for _ in range(steps):
            nxt = int(model(torch.tensor([ids]))[0, -1].argmax())
            if nxt == EOS:
                break
            ids.append(nxt)
    return ids[len(prompt_ids) :]
