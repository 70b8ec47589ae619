"""The token shard format shared by data preparation (writer) and the trainer's loader (reader).

A dataset output folder holds:
  manifest.json        this module's `Manifest`
  tokenizer.json       the Hugging Face tokenizer the tokens were made with
  datasheet.md         documentation (written by prepare)
  train-00000.bin ...  flat little-endian token arrays, no header (dtype in the manifest)
  validation-00000.bin ...
Documents are concatenated with the end-of-text id after each one. Shard paths in the manifest
are relative to the manifest's folder.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from capstan_trainer import storage

MANIFEST_VERSION = 1

# Loss-mask bytes (`<split>-NNNNN.mask.bin`, one per token, beside the token shard) of chat data.
LOSS = 1
"""LOSS: the token is a training target (an assistant token, its end-of-turn included)."""
DOC_START = 2
"""DOC_START: the token begins a document; attention does not look back past it."""


def dtype_for_vocab(vocab_size: int) -> str:
    """uint16 when every id fits, else uint32."""
    return "uint16" if vocab_size <= 65536 else "uint32"


@dataclass
class ShardInfo:
    path: str
    """path: file name relative to the manifest's folder."""
    tokens: int
    sha256: str
    mask: str = ""
    """mask: the loss-mask file's name (one uint8 per token), or "" when the data has none."""
    mask_sha256: str = ""


@dataclass
class SplitInfo:
    shards: list[ShardInfo] = field(default_factory=list)
    documents: int = 0
    loss_tokens: int = 0
    """loss_tokens: tokens whose mask says LOSS (0 when the data has no mask)."""

    @property
    def tokens(self) -> int:
        return sum(s.tokens for s in self.shards)


@dataclass
class Manifest:
    dtype: str
    vocab_size: int
    eos_id: int
    tokenizer: dict[str, str]
    """tokenizer: {"path": relative file name, "sha256": hash of its bytes}."""
    splits: dict[str, SplitInfo]
    """splits: "train" and "validation"."""
    fingerprint: str = ""
    """fingerprint: hash of the inputs and the spec that produced this output."""
    stats: dict[str, Any] = field(default_factory=dict)
    """stats: per-stage document counts and other figures from preparation."""
    loss_mask: str = ""
    """loss_mask: "" (no mask: every token is a target), the Dataset's trainOn (assistant, all),
    or "pairs": preference data, each document a chosen then a rejected sequence (each with
    DOC_START), LOSS on their answers."""
    version: int = MANIFEST_VERSION

    def to_json(self) -> str:
        d = asdict(self)
        for name, split in self.splits.items():
            d["splits"][name]["tokens"] = split.tokens
        return json.dumps(d, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "manifest.json") -> Manifest:
        try:
            d = json.loads(text)
            if d.get("version") != MANIFEST_VERSION:
                raise ValueError(f"version {d.get('version')!r}, expected {MANIFEST_VERSION}")
            splits = {
                name: SplitInfo(
                    shards=[ShardInfo(**s) for s in sp["shards"]],
                    documents=sp.get("documents", 0),
                    loss_tokens=sp.get("loss_tokens", 0),
                )
                for name, sp in d["splits"].items()
            }
            return cls(
                dtype=d["dtype"],
                vocab_size=d["vocab_size"],
                eos_id=d["eos_id"],
                tokenizer=d["tokenizer"],
                splits=splits,
                fingerprint=d.get("fingerprint", ""),
                stats=d.get("stats", {}),
                loss_mask=d.get("loss_mask", ""),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{source}: not a Capstan shard manifest: {exc}") from exc


def read_manifest(uri: str) -> Manifest:
    """`uri` is the manifest file or its folder."""
    if not uri.endswith(".json"):
        uri = storage.join(uri, "manifest.json")
    return Manifest.from_json(storage.read_bytes(uri).decode(), source=uri)


def encode_shard(tokens: np.ndarray, dtype: str) -> tuple[bytes, str]:
    """Bytes of a shard and their sha256."""
    data = np.ascontiguousarray(tokens, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()
    return data, hashlib.sha256(data).hexdigest()


def verify_checksums(manifest_uri: str, manifest: Manifest) -> None:
    """Every shard's sha256 is the manifest's; raises ValueError naming the first that differs.
    Reads every byte, so it is the start-up check (`--validate-only`), not the loader's."""
    base = manifest_uri.rsplit("/", 1)[0] if manifest_uri.endswith(".json") else manifest_uri
    for split in manifest.splits.values():
        for shard in split.shards:
            files = [(shard.path, shard.sha256)] + ([(shard.mask, shard.mask_sha256)] if shard.mask else [])
            for name, want in files:
                uri = storage.join(base, name)
                digest = hashlib.sha256()
                fs, path = storage.filesystem(uri)
                with fs.open(path, "rb") as f:
                    while chunk := f.read(8 << 20):
                        digest.update(chunk)
                if digest.hexdigest() != want:
                    raise ValueError(
                        f"{uri}: sha256 {digest.hexdigest()} differs from the manifest's {want} "
                        "(the shard changed or was corrupted after preparation)"
                    )


def decode_shard(data: bytes, dtype: str) -> np.ndarray:
    return np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<"))
