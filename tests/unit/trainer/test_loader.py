"""The loader's order is a pure function of (seed, manifest, sequence index), whatever the world
size, the cursor it starts from, or the storage it reads from."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch

from capstan_trainer import shards, synthetic
from capstan_trainer.train import loader
from capstan_trainer.train.config import _open_source


def source(uri: str):
    synthetic.write_dataset(
        uri, vocab_size=256, train_tokens=9_000, validation_tokens=1_000, shard_tokens=2_000
    )
    entry = type("E", (), {"dataset_ref": "", "uri": uri, "weight": 1.0})()
    return _open_source(0, entry, need_validation=True, check_storage=True)


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    return source(f"file://{tmp_path_factory.mktemp('d')}")


def steps(src, world: int, n_steps: int, cursor: int = 0, seed: int = 3, seq_len: int = 16):
    """Per step, the sorted rows every rank read (the step's global batch as a set)."""
    order = loader.SequenceOrder([src.train.windows(seq_len)], [1.0], [src.fingerprint], seed)
    loaders = [loader.TrainLoader([src.train], order, seq_len, 2, 8, r, world, cursor) for r in range(world)]
    out = []
    for _ in range(n_steps):
        rows = [torch.cat([b.x, b.y[:, -1:]], 1) for ld in loaders for b in ld.step_batches()]
        out.append(sorted(map(tuple, torch.cat(rows).tolist())))
    for ld in loaders:
        ld.close()
    return out


@pytest.mark.parametrize("n", [1, 2, 3, 7, 100, 1000, 4099])
def test_permutation_is_a_bijection(n):
    assert sorted(loader.permute(i, n, key=12345) for i in range(n)) == list(range(n))


def test_order_is_independent_of_world_size_and_resumable(local):
    one = steps(local, world=1, n_steps=6)
    assert steps(local, world=2, n_steps=6) == one
    assert steps(local, world=4, n_steps=6) == one
    assert steps(local, world=2, n_steps=3, cursor=3 * 8) == one[3:]


def test_windows_are_the_manifest_tokens(local):
    seq_len = 16
    order = loader.SequenceOrder([local.train.windows(seq_len)], [1.0], [local.fingerprint], 3)
    src, window = order.locate(5)
    got = loader.read_windows([local.train], [(src, window)], seq_len)[0]
    all_tokens = torch.cat(
        [
            torch.from_numpy(shards.decode_shard(Path(p).read_bytes(), "uint16").astype("int64"))
            for p in local.train.paths
        ]
    )
    assert torch.equal(got, all_tokens[window * seq_len : window * seq_len + seq_len + 1])


def test_seed_changes_the_order(local):
    assert steps(local, world=1, n_steps=2, seed=3) != steps(local, world=1, n_steps=2, seed=4)


def test_every_sequence_once_per_epoch(local):
    n = local.train.windows(16)
    order = loader.SequenceOrder([n], [1.0], [local.fingerprint], 3)
    assert sorted(order.locate(g)[1] for g in range(n)) == list(range(n))
    assert [order.locate(g)[1] for g in range(n)] != [order.locate(g)[1] for g in range(n, 2 * n)]


def test_mixture_follows_weights_exactly_per_block():
    order = loader.SequenceOrder([50, 70, 30], [0.5, 0.3, 0.2], ["a", "b", "c"], 1)
    counts = Counter(order.locate(g)[0] for g in range(4 * loader.MIX_BLOCK))
    assert [counts[i] for i in range(3)] == [4 * 512, 4 * 307, 4 * 205]
    with pytest.raises(ValueError, match="give some source no sequences"):
        loader.SequenceOrder([5, 5], [1.0, 1e-6], ["a", "b"], 1)


def test_s3_reads_equal_local_reads(local, s3_bucket):
    remote = source(f"{s3_bucket}/d")
    assert remote.fingerprint == local.fingerprint
    assert steps(remote, world=2, n_steps=3) == steps(local, world=2, n_steps=3)
