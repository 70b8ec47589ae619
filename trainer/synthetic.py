"""A small generated token dataset in the shard format, for tests, benchmarks and smoke runs.

The tokens follow a learnable pattern (each next token is the previous plus a step drawn from a
few values, modulo the vocabulary), so training loss visibly falls within a few dozen steps.
`python -m capstan_trainer.synthetic --out URI` writes one.
"""

from __future__ import annotations

import argparse
import hashlib

import numpy as np

from capstan_trainer import shards, storage


def tokenizer_json(vocab_size: int) -> str:
    """A valid Hugging Face tokenizer.json: word-level, tokens "t0".."t{V-1}", whitespace split."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {f"t{i}": i for i in range(vocab_size)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tok.to_str()


def generate(n: int, vocab_size: int, rng: np.random.Generator) -> np.ndarray:
    steps = rng.choice(np.array([1, 2, 3, 5]), size=n)
    return ((np.cumsum(steps) + rng.integers(vocab_size)) % vocab_size).astype(np.int64)


def write_dataset(
    uri: str,
    vocab_size: int = 256,
    train_tokens: int = 200_000,
    validation_tokens: int = 20_000,
    shard_tokens: int = 65_536,
    seed: int = 0,
    tokenizer: bytes | None = None,
    eos_id: int | None = None,
) -> shards.Manifest:
    """Write manifest.json, tokenizer.json and shards under `uri`; returns the manifest.
    `tokenizer` (tokenizer.json's bytes, written as they are) and `eos_id` stand for a model's
    own tokenizer, as a Dataset with spec.tokenizer.fromModel records it."""
    rng = np.random.default_rng(seed)
    dtype = shards.dtype_for_vocab(vocab_size)
    splits = {}
    for name, total in (("train", train_tokens), ("validation", validation_tokens)):
        info = shards.SplitInfo(documents=max(1, total // 512))
        tokens = generate(total, vocab_size, rng)
        for k, start in enumerate(range(0, total, shard_tokens)):
            chunk = tokens[start : start + shard_tokens]
            data, digest = shards.encode_shard(chunk, dtype)
            path = f"{name}-{k:05d}.bin"
            storage.write_bytes(storage.join(uri, path), data)
            info.shards.append(shards.ShardInfo(path=path, tokens=len(chunk), sha256=digest))
        splits[name] = info
    tok = tokenizer if tokenizer is not None else tokenizer_json(vocab_size).encode()
    storage.write_bytes(storage.join(uri, "tokenizer.json"), tok)
    manifest = shards.Manifest(
        dtype=dtype,
        vocab_size=vocab_size,
        eos_id=vocab_size - 1 if eos_id is None else eos_id,
        tokenizer={"path": "tokenizer.json", "sha256": hashlib.sha256(tok).hexdigest()},
        splits=splits,
        fingerprint=f"synthetic-v{vocab_size}-n{train_tokens}-s{seed}",
        stats={"generator": "capstan_trainer.synthetic"},
    )
    storage.write_bytes(storage.join(uri, "manifest.json"), manifest.to_json().encode())
    return manifest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder URI (s3://, file:// or a path)")
    p.add_argument("--vocab-size", type=int, default=256)
    p.add_argument("--train-tokens", type=int, default=200_000)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    write_dataset(a.out, vocab_size=a.vocab_size, train_tokens=a.train_tokens, seed=a.seed)
    print(storage.join(a.out, "manifest.json"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
