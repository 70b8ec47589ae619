"""Make a small, randomly initialised Hugging Face Llama directory (what `init.huggingFace` and
`spec.tokenizer.fromModel` read) and optionally upload it to object storage.

    python -m hack.hf_model --out DIR_OR_URI [--shard-size 20KB] [--seed 0]
        [--corpus DIR_OR_URI]                # also counting documents in its words (words.jsonl)
        [--endpoint http://127.0.0.1:PORT]   # for s3:// (credentials from the AWS variables)

The model has what an imported Llama 3 has and the Capstan decoder must get right: grouped-query
attention (4 query heads, 2 key/value heads), untied embeddings and llama3 rope_scaling. Its
tokenizer is a word-level one over "w0".."w99" plus Llama 3's special tokens, so a corpus of those
words tokenizes to something a few training steps can learn. Needs transformers (the dev extras).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

WORDS = 100
SPECIALS = [
    "<|unk|>",
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|pad|>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
]
BOS, EOS = WORDS + 1, WORDS + 2


def llama_config(**overrides):
    from transformers import LlamaConfig

    kw = dict(
        vocab_size=WORDS + len(SPECIALS),
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        # Big enough that logits differ visibly between a right and a wrong import.
        initializer_range=0.1,
        bos_token_id=BOS,
        eos_token_id=EOS,
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": 10000.0,
            "factor": 4.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            # Short, so that the 16-dim heads have frequencies in all three llama3 bands.
            "original_max_position_embeddings": 32,
        },
    )
    return LlamaConfig(**{**kw, **overrides})


def tokenizer_json() -> str:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    vocab = {f"w{i}": i for i in range(WORDS)} | {t: WORDS + i for i, t in enumerate(SPECIALS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|unk|>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS])
    return tok.to_str()


def make(out: Path, shard_size: str | None = None, seed: int = 0, **config) -> Path:
    """Write the directory at `out` (local); `shard_size` (e.g. "20KB") splits the weights into
    several safetensors files and an index, as big models come."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(llama_config(**config)).eval()
    kw = {"max_shard_size": shard_size} if shard_size else {}
    model.save_pretrained(out, **kw)
    (out / "tokenizer.json").write_text(tokenizer_json())
    tok_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|begin_of_text|>",
        "eos_token": "<|end_of_text|>",
        "pad_token": "<|pad|>",
        "model_max_length": model.config.max_position_embeddings,
        "clean_up_tokenization_spaces": False,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2) + "\n")
    return out


def corpus(n: int = 400, seed: int = 0) -> str:
    """JSON lines of documents counting up in the model's words ("w7 w8 w9 ..."), CC0."""
    import random

    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        start, length = rng.randrange(WORDS), rng.randrange(20, 60)
        text = " ".join(f"w{(start + k) % WORDS}" for k in range(length))
        lines.append(json.dumps({"text": text, "licence": "CC0-1.0"}))
    return "\n".join(lines) + "\n"


def upload(local: Path, uri: str, endpoint: str = "") -> list[str]:
    """Copy every file of `local` under `uri` (any fsspec URI); returns the names copied."""
    import fsspec

    opts = {"endpoint_url": endpoint} if endpoint and uri.startswith("s3://") else {}
    fs, root = fsspec.core.url_to_fs(uri, **opts)
    names = sorted(p.name for p in local.iterdir() if p.is_file())
    for name in names:
        fs.put_file(str(local / name), f"{root.rstrip('/')}/{name}")
    return names


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="hack.hf_model", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="local folder or fsspec URI (s3://bucket/prefix)")
    p.add_argument("--shard-size", default=None, help='e.g. "20KB": several safetensors shards')
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--corpus", default="", help="folder or URI for words.jsonl, a corpus in its words")
    p.add_argument("--endpoint", default=os.environ.get("AWS_ENDPOINT_URL", ""), help="S3 endpoint")
    a = p.parse_args(argv)
    if "://" not in a.out or a.out.startswith("file://"):
        local = Path(a.out.removeprefix("file://"))
        local.mkdir(parents=True, exist_ok=True)
        names = sorted(x.name for x in make(local, a.shard_size, a.seed).iterdir())
    else:
        with tempfile.TemporaryDirectory() as tmp:
            names = upload(make(Path(tmp), a.shard_size, a.seed), a.out, a.endpoint)
    if a.corpus:
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, "words.jsonl").write_text(corpus(seed=a.seed))
            if "://" not in a.corpus or a.corpus.startswith("file://"):
                Path(a.corpus.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
            upload(Path(tmp), a.corpus if "://" in a.corpus else f"file://{a.corpus}", a.endpoint)
    print(json.dumps({"out": a.out, "files": names, "corpus": a.corpus or None}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
