"""Starting from a Hugging Face Llama directory (init.huggingFace): a random transformers
LlamaForCausalLM with grouped-query attention, untied embeddings and llama3 rope_scaling, saved
as one safetensors file and as several shards, is imported with transformers' logits, trained with
the real entrypoint under torchrun (FSDP2 over two ranks), exported, and reloaded by transformers
with our model's logits. Unsupported configs and a foreign tokenizer are refused by name."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from capstan_api.trainingrun import TrainingRunSpec
from capstan_trainer import export, model_load, synthetic
from capstan_trainer.checkpoint import load_model
from capstan_trainer.serve.inputs import render_chat
from capstan_trainer.serve.protocol import ChatMessage
from capstan_trainer.train.config import ConfigError, resolve
from hack import hf_model
from tests.unit.trainer.helpers import run_resource, torchrun, write_resource

VOCAB = hf_model.WORDS + len(hf_model.SPECIALS)
MESSAGES = [{"role": "system", "content": "w1 w2"}, {"role": "user", "content": "w5 w6 w7"}]


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("hf")
    return {
        "one file": str(hf_model.make(root / "one")),
        "shards": str(hf_model.make(root / "shards", shard_size="20KB")),
        "tied": str(hf_model.make(root / "tied", tie_word_embeddings=True)),
    }


@pytest.fixture(scope="module")
def model_data(tmp_path_factory, hf_dirs) -> str:
    """Token shards written with the model's own tokenizer.json, as spec.tokenizer.fromModel does."""
    uri = f"file://{tmp_path_factory.mktemp('hf-data')}"
    tok = Path(hf_dirs["one file"], "tokenizer.json").read_bytes()
    synthetic.write_dataset(
        uri, vocab_size=VOCAB, train_tokens=8_000, validation_tokens=1_000, tokenizer=tok, eos_id=hf_model.EOS
    )
    return uri


def _tokens(seed: int = 0) -> torch.Tensor:
    # 120 of the 128 positions: past original_max_position_embeddings (32), where llama3 scaling matters.
    return torch.randint(0, VOCAB, (2, 120), generator=torch.Generator().manual_seed(seed))


def _hf_logits(path: str, tokens: torch.Tensor) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        return hf(tokens).logits


@pytest.mark.parametrize("layout", ["one file", "shards", "tied"])
def test_an_hf_llama_imports_with_transformers_logits(hf_dirs, layout):
    path = hf_dirs[layout]
    assert (layout == "shards") == any(p.endswith(".index.json") for p in _names(path))
    lm = model_load.load(f"file://{path}")
    cfg = lm.model.cfg
    assert (cfg.n_heads, cfg.n_kv_heads, cfg.tie_embeddings) == (4, 2, layout == "tied")
    assert cfg.rope_scaling is not None and cfg.rope_scaling.factor == 4.0
    tokens = _tokens()
    with torch.no_grad():
        ours = lm.model(tokens)
    diff = (ours - _hf_logits(path, tokens)).abs().max().item()
    assert diff < 1e-4, f"max abs logit difference {diff}"


def _names(path: str) -> list[str]:
    import os

    return os.listdir(path)


def test_training_from_hf_weights_exports_a_model_transformers_reloads(hf_dirs, model_data, tmp_path):
    start = hf_dirs["shards"]
    resource = run_resource(
        model_data,
        f"file://{tmp_path}/ckpt",
        model={"maxSeqLen": 64},
        init={"huggingFace": f"file://{start}"},
        optimizer={"totalSteps": 3, "warmupSteps": 1, "lr": 1e-3, "minLr": 1e-4},
        checkpoint={"intervalSteps": 3},
    )
    del resource["spec"]["model"]["preset"]
    result = torchrun(write_resource(tmp_path / "run.yaml", resource), nproc=2)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [e["step"] for e in result.events("step")] == [1, 2, 3]
    assert result.events("start")[0]["init"] == f"file://{start}"
    step = result.events("committed")[-1]["uri"]

    out = tmp_path / "hf-out"
    export.export(step, f"file://{out}")
    config = json.loads((out / "config.json").read_text())
    assert config["num_key_value_heads"] == 2 and config["tie_word_embeddings"] is False
    assert config["rope_scaling"]["rope_type"] == "llama3" and config["max_position_embeddings"] == 64
    # The weights moved a little from the HF ones (3 AdamW steps of at most ~lr each), so training
    # started from them; a random init would be ~0.1 away.
    before = load_file(f"{start}/model-00001-of-00014.safetensors")
    after = load_file(str(out / "model.safetensors"))
    for name, t in before.items():
        moved = (after[name] - t).abs().max().item()
        assert 0 < moved < 0.01, f"{name} moved {moved}"

    ours, _ = load_model(step)
    tokens = _tokens(1)[:, :64]
    with torch.no_grad():
        diff = (ours(tokens) - _hf_logits(str(out), tokens)).abs().max().item()
    assert diff < 1e-4, f"max abs logit difference {diff}"

    # The chat template travels: transformers renders the prompt our server renders, and stops
    # at the model's end tokens.
    from transformers import AutoTokenizer, GenerationConfig

    tok = AutoTokenizer.from_pretrained(str(out))
    text = tok.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    server = SimpleNamespace(loaded=model_load.load(f"file://{out}"))
    assert render_chat(server, [ChatMessage.model_validate(m) for m in MESSAGES]) == text
    assert text.startswith("<|begin_of_text|><|system|>\nw1 w2<|end_of_text|>")
    assert GenerationConfig.from_pretrained(str(out)).eos_token_id == [hf_model.EOS]

    # A restart with more steps resumes from the run's checkpoint, not from the HF weights again.
    resource["spec"]["optimizer"]["totalSteps"] = 5
    more = torchrun(write_resource(tmp_path / "run.yaml", resource), nproc=2)
    assert more.returncode == 0, more.stderr[-3000:]
    assert (more.events("start")[0]["step"], more.events("start")[0]["resumedFrom"]) == (3, step)
    assert [e["step"] for e in more.events("step")] == [4, 5]


def _spec(data: str, tmp_path, **init) -> TrainingRunSpec:
    res = run_resource(data, f"file://{tmp_path}/ckpt", init=init)
    del res["spec"]["model"]
    return TrainingRunSpec.model_validate(res["spec"])


@pytest.mark.parametrize(
    "field,value,named",
    [
        ("model_type", "mistral", "config.json model_type: 'mistral'"),
        ("attention_bias", True, "config.json attention_bias: True"),
        ("hidden_act", "gelu", "config.json hidden_act: 'gelu'"),
        ("rope_parameters", {"rope_type": "yarn", "factor": 2.0}, "rope_parameters.rope_type: 'yarn'"),
    ],
)
def test_an_unsupported_config_is_refused_naming_the_field(
    hf_dirs, model_data, tmp_path, field, value, named
):
    bad = tmp_path / "bad"
    shutil.copytree(hf_dirs["one file"], bad)
    config = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, field: value}))
    with pytest.raises(ConfigError, match="spec.init.huggingFace") as err:
        resolve(_spec(model_data, tmp_path, huggingFace=f"file://{bad}"))
    assert named in str(err.value)


def test_a_missing_weight_shard_is_a_config_error_naming_it(hf_dirs, model_data, tmp_path):
    cut = tmp_path / "cut"
    shutil.copytree(hf_dirs["shards"], cut)
    (cut / "model-00003-of-00014.safetensors").unlink()
    with pytest.raises(ConfigError) as err:
        resolve(_spec(model_data, tmp_path, huggingFace=f"file://{cut}"))
    assert str(err.value) == (
        f"spec.init.huggingFace: file://{cut}: weight shard(s) missing: model-00003-of-00014.safetensors"
    )


def test_a_dataset_tokenized_with_another_tokenizer_is_refused_naming_both(hf_dirs, tmp_path):
    other = f"file://{tmp_path}/other-data"
    synthetic.write_dataset(other, vocab_size=VOCAB, train_tokens=4_000, validation_tokens=500)
    model = f"file://{hf_dirs['one file']}"
    with pytest.raises(ConfigError) as err:
        resolve(_spec(other, tmp_path, huggingFace=model))
    msg = str(err.value)
    assert msg.startswith("spec.datasets:") and "other-data" in msg and model in msg and "fromModel" in msg


def test_spec_model_may_only_shorten_the_context(hf_dirs, model_data, tmp_path):
    model = f"file://{hf_dirs['one file']}"
    res = run_resource(model_data, f"file://{tmp_path}/ckpt", init={"huggingFace": model})
    with pytest.raises(
        ConfigError, match=r"spec.model.preset: must be left unset with spec.init.huggingFace"
    ):
        resolve(TrainingRunSpec.model_validate(res["spec"]))
    res["spec"]["model"] = {"maxSeqLen": 256}
    with pytest.raises(
        ConfigError, match="spec.model.maxSeqLen: 256 exceeds the model's max_position_embeddings 128"
    ):
        resolve(TrainingRunSpec.model_validate(res["spec"]))
    res["spec"]["model"] = {"maxSeqLen": 64}
    cfg = resolve(TrainingRunSpec.model_validate(res["spec"]))
    assert cfg.model.max_seq_len == 64 and cfg.init_hf == model and cfg.stop_ids == [hf_model.EOS]


def test_checkpoints_of_plain_models_keep_their_fingerprint_and_scaled_ones_round_trip(hf_dirs):
    from capstan_trainer.checkpoint import model_config_from_meta
    from capstan_trainer.model import preset

    # No rope_scaling key for a model without it: runs made before the field existed still resume.
    assert "rope_scaling" not in preset("test").to_dict()
    scaled = model_load.read_hf_config(f"file://{hf_dirs['one file']}")
    meta = json.loads(json.dumps({"model": scaled.to_dict()}))  # as capstan.json stores it
    assert model_config_from_meta(meta) == scaled
