"""The Hugging Face export vLLM serves: what transformers makes of it (the chat template renders
the prompt the built-in server renders, the weights give the Capstan model's logits), its
whole-or-nothing marker, and the init container's copy of it (capstan_trainer.fetch)."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pytest
import torch

from capstan_api import exitcodes
from capstan_api.files import ExportMarker
from capstan_trainer import export, fetch, model_load, storage
from capstan_trainer.serve.inputs import chat_prompt, render_chat
from capstan_trainer.serve.protocol import ChatMessage
from tests.support import tiny_model

MESSAGES = [
    {"role": "system", "content": "count on"},
    {"role": "user", "content": "w5 w6 w7"},
]
EXPECTED_PROMPT = (
    "<|begin_of_text|><|system|>\ncount on<|end_of_text|>\n<|user|>\nw5 w6 w7<|end_of_text|>\n<|assistant|>\n"
)


@pytest.fixture(scope="module")
def exported(tiny, tmp_path_factory):
    """The tiny checkpoint exported afresh, as the operator's export Job does: into <step>/hf."""
    step = tmp_path_factory.mktemp("ckpt") / "step-00000100"
    shutil.copytree(tiny.checkpoint_uri.removeprefix("file://"), step)
    out = step / "hf"
    export.export(f"file://{step}", f"file://{out}")
    return out


def test_the_export_is_whole_with_its_marker_last(exported):
    marker = ExportMarker.model_validate_json((exported / "EXPORTED").read_text())
    assert marker.step == 100 and marker.checkpoint.endswith("step-00000100") and marker.dtype == "float32"
    assert marker.files == sorted(
        [
            "capstan.json",
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json",
        ]
    )
    assert sorted(p.name for p in exported.iterdir()) == sorted([*marker.files, "EXPORTED"])
    config = json.loads((exported / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["model_type"] == "llama"
    generation = json.loads((exported / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [tiny_model.EOS]  # a list of stop ids, as Llama 3 writes it


def test_transformers_renders_the_chat_prompt_the_builtin_server_renders(exported):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(exported))
    text = tok.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    assert text == EXPECTED_PROMPT
    # The built-in server, loading the same export, renders and tokenizes the same.
    engine = SimpleNamespace(loaded=model_load.load(f"file://{exported}"))
    messages = [ChatMessage.model_validate(m) for m in MESSAGES]
    assert render_chat(engine, messages) == text
    ids = tok.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True, return_dict=True)
    assert ids["input_ids"] == chat_prompt(engine, messages)
    assert tok.eos_token == "<|end_of_text|>" and tok.convert_tokens_to_ids(tok.eos_token) == tiny_model.EOS


def test_transformers_loads_the_weights_with_the_capstan_models_logits(tiny, exported):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(str(exported), dtype=torch.float32).eval()
    assert type(hf).__name__ == "LlamaForCausalLM"
    ours = tiny_model.trainer_model(tiny)
    tokens = torch.randint(0, tiny_model.EOS + 1, (2, 48), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (hf(tokens).logits - ours(tokens)).abs().max().item()
    assert diff < 1e-4, f"max abs logit difference {diff}"


def test_the_datasets_own_chat_template_travels_into_the_export(tiny, tmp_path):
    from transformers import AutoTokenizer

    dataset = tmp_path / "dataset"
    shutil.copytree(tiny.dataset_uri.removeprefix("file://"), dataset)
    template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    config = json.loads((dataset / "tokenizer_config.json").read_text())
    (dataset / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": template}))
    step = tmp_path / "ckpt" / "step-00000100"
    shutil.copytree(tiny.checkpoint_uri.removeprefix("file://"), step)
    meta = json.loads((step / "capstan.json").read_text())
    meta["dataset"] = [{"uri": f"file://{dataset}", "weight": 1.0}]
    (step / "capstan.json").write_text(json.dumps(meta))
    export.export(f"file://{step}", str(step / "hf"))
    tok = AutoTokenizer.from_pretrained(str(step / "hf"))
    assert tok.apply_chat_template(MESSAGES, tokenize=False) == "[system] count on\n[user] w5 w6 w7\n"


def test_an_interrupted_export_leaves_no_marker(tiny, exported, tmp_path, monkeypatch):
    out = tmp_path / "hf"
    shutil.copytree(exported, out)  # a whole export, being written again
    real = storage.write_bytes

    def failing(uri: str, data: bytes) -> None:
        if uri.endswith("tokenizer.json"):
            raise OSError("storage went away")
        real(uri, data)

    monkeypatch.setattr(storage, "write_bytes", failing)
    with pytest.raises(OSError, match="storage went away"):
        export.export(tiny.checkpoint_uri, str(out))
    assert not (out / "EXPORTED").exists()  # half-rewritten: no longer counts as an export


def test_fetch_copies_a_whole_export_and_refuses_a_half_written_one(exported, tmp_path, capsys):
    local = tmp_path / "models"
    names = fetch.fetch(f"file://{exported}", str(local))
    assert sorted(p.name for p in local.iterdir()) == names
    assert (local / "model.safetensors").read_bytes() == (exported / "model.safetensors").read_bytes()
    # A step folder's export without its marker is half-written: the init container fails, naming it.
    half = tmp_path / "ckpt" / "step-00000100" / "hf"
    shutil.copytree(exported, half)
    (half / "EXPORTED").unlink()
    assert fetch.main(["--uri", f"file://{half}", "--out", str(tmp_path / "x")]) == exitcodes.INVALID_CONFIG
    assert "no EXPORTED marker" in capsys.readouterr().err
    # An export made elsewhere (not under a step folder) needs only its config.json.
    given = tmp_path / "given"
    shutil.copytree(half, given)
    assert "config.json" in fetch.fetch(f"file://{given}", str(tmp_path / "y"))
    (given / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        fetch.fetch(f"file://{given}", str(tmp_path / "z"))
