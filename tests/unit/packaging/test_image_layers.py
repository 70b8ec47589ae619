"""The trainer image installs what pip resolved in layers of at most 1.5 GB: cuDNN and cuBLAS,
NVIDIA's other libraries, torch, triton, the rest."""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "images"))
from requirements import split, write_layers  # noqa: E402  (images/requirements.py)


def report(*pins: str) -> dict:
    """The part of `pip install --dry-run --report` that the split reads."""
    return {
        "install": [{"metadata": dict(zip(("name", "version"), p.split("=="), strict=True))} for p in pins]
    }


def test_split_puts_each_distribution_in_its_layer():
    layers = split(
        report(
            "nvidia-cublas==13.4.1.3",
            "nvidia-cudnn-cu13==9.26.0.51",
            "nvidia_nccl_cu13==2.30.7",
            "cuda-bindings==13.5.0",
            "torch==2.15.0",
            "triton==3.9.0",
            "torchx-nightly==2026.10.26",
            "numpy==2.4.6",
            "Jinja2==3.1.6",
        )
    )
    assert layers == {
        "cudnn": ["nvidia-cublas==13.4.1.3", "nvidia-cudnn-cu13==9.26.0.51"],
        "cuda": ["cuda-bindings==13.5.0", "nvidia_nccl_cu13==2.30.7"],
        "torch": ["torch==2.15.0"],
        "triton": ["triton==3.9.0"],
        # torchx-nightly is not torch: a name holds only itself and names that go on with '-'.
        "rest": ["Jinja2==3.1.6", "numpy==2.4.6", "torchx-nightly==2026.10.26"],
    }


def test_every_layer_file_is_written_even_when_empty(tmp_path):
    (tmp_path / "report.json").write_text(json.dumps(report("kopf==1.45.2")))
    write_layers(str(tmp_path / "report.json"), str(tmp_path / "layers"))
    files = {p.name: p.read_text() for p in (tmp_path / "layers").iterdir()}
    empty = {f"{layer}.txt": "" for layer in ("cudnn", "cuda", "torch", "triton")}
    assert files == {**empty, "rest.txt": "kopf==1.45.2\n"}
