"""spec.tokenizer.fromModel: a Dataset tokenized with a Hugging Face model's own tokenizer.json,
which a TrainingRun starting from that model (init.huggingFace) then accepts."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from capstan_api.trainingrun import TrainingRunSpec
from capstan_trainer import shards, storage
from capstan_trainer.train.config import resolve
from hack import hf_model
from tests.unit.prepare.test_inputs import local, resource, run


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return hf_model.make(tmp_path_factory.mktemp("hf") / "model")


def test_the_models_tokenizer_is_used_byte_for_byte_and_the_run_accepts_the_data(model_dir, tmp_path, capsys):
    docs = [" ".join(f"w{(i + k) % 100}" for k in range(40)) for i in range(30)]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    src = {"uri": local(tmp_path / "in.jsonl"), "licence": "CC0-1.0"}
    res = resource([src], tmp_path / "out", tokenizer={"fromModel": local(model_dir)})
    code, out = run(tmp_path, res, capsys)
    assert code == 0, out

    manifest = shards.read_manifest(local(tmp_path / "out" / "manifest.json"))
    model_tok = (model_dir / "tokenizer.json").read_bytes()
    assert (tmp_path / "out" / "tokenizer.json").read_bytes() == model_tok
    assert manifest.tokenizer["sha256"] == hashlib.sha256(model_tok).hexdigest()
    assert manifest.eos_id == hf_model.EOS and manifest.vocab_size == hf_model.WORDS + len(hf_model.SPECIALS)
    shard = manifest.splits["train"].shards[0]
    tokens = shards.decode_shard(storage.read_bytes(local(tmp_path / "out" / shard.path)), manifest.dtype)
    # Word "wN" is id N in the model's vocabulary; each document ends with the model's eos.
    first = np.asarray(tokens[:41]).tolist()
    assert first[-1] == hf_model.EOS and all(0 <= t < 100 for t in first[:-1])
    assert [t % 100 for t in first[1:40]] == [(first[0] + k) % 100 for k in range(1, 40)]

    spec = {
        "datasets": [{"uri": local(tmp_path / "out")}],
        "init": {"huggingFace": local(model_dir)},
        "optimizer": {
            "globalBatchTokens": 64,
            "microBatch": 2,
            "seqLen": 32,
            "totalSteps": 2,
            "warmupSteps": 1,
        },
        "checkpoint": {"uri": local(tmp_path / "ckpt")},
    }
    cfg = resolve(TrainingRunSpec.model_validate(spec))
    assert cfg.tokenizer_uri == local(model_dir / "tokenizer.json") and cfg.model.n_kv_heads == 2


def test_a_model_without_tokenizer_json_exits_3_naming_the_field(tmp_path, capsys):
    (tmp_path / "in.jsonl").write_text(json.dumps({"text": "w1 w2 w3"}) + "\n")
    (tmp_path / "empty-model").mkdir()
    src = {"uri": local(tmp_path / "in.jsonl"), "licence": "CC0-1.0"}
    res = resource([src], tmp_path / "out", tokenizer={"fromModel": local(tmp_path / "empty-model")})
    code, err = run(tmp_path, res, capsys)
    assert (
        code == 3 and "spec.tokenizer.fromModel: no such file" in err and "empty-model/tokenizer.json" in err
    )
