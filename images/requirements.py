"""What an image installs, in two steps of its build.

`requirements.py PYPROJECT EXTRA...` prints the requirements of pyproject.toml's base and the
given extras, one per line, with the project's own `capstan[...]` references expanded: an image
installs its dependencies before its sources, so a source change does not reinstall torch.

`requirements.py --layers REPORT OUTDIR` splits what pip resolved (`pip install --dry-run
--report REPORT`) into pinned lists, one per image layer (LAYERS, then `rest.txt`), installed
with `--no-deps` one RUN each. buildah commits a layer by writing it again (the diff as a blob,
then the new layer) while the container's copy still exists, and a registry serves a layer as
one stream: CI ran out of disk committing torch with CUDA as one 6 GB layer; with layers of at most
1.5 GB the whole build peaked 13.1 GB above its start here, 6.2 of it the image itself."""

import json
import re
import sys
import tomllib
from pathlib import Path

LAYERS = {
    "cudnn": ("nvidia-cudnn", "nvidia-cublas"),  # 1.45 GB installed (torch 2.15, CUDA 13)
    "cuda": ("nvidia", "cuda"),  # NVIDIA's other libraries as PyPI ships them for torch: 1.5 GB
    "torch": ("torch",),  # 1.15 GB
    "triton": ("triton",),  # 1.05 GB
}
"""LAYERS maps a layer to the distributions it holds: those named so, or whose name starts with
the name and a '-' (`nvidia` holds `nvidia-nccl-cu13`, not `nvidiax`); the first layer that
matches takes a distribution, and those no layer takes go in the last one, `rest`."""


def requirements(pyproject: str, extras: list[str]) -> list[str]:
    with open(pyproject, "rb") as f:
        project = tomllib.load(f)["project"]
    optional, out, seen = project["optional-dependencies"], list(project["dependencies"]), set()
    todo = list(extras)
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for req in optional[extra]:
            if req.startswith("capstan["):
                todo += req[len("capstan[") : -1].split(",")
            else:
                out.append(req.split("#")[0].strip())
    return out


def layer_of(name: str) -> str:
    """The layer a distribution goes in, by its normalized name (PEP 503)."""
    norm = re.sub(r"[-_.]+", "-", name).lower()
    for layer, names in LAYERS.items():
        if any(norm == n or norm.startswith(n + "-") for n in names):
            return layer
    return "rest"


def split(report: dict) -> dict[str, list[str]]:
    """`name==version` pins per layer (every layer present, maybe empty), from pip's report."""
    out: dict[str, list[str]] = {layer: [] for layer in [*LAYERS, "rest"]}
    for item in report["install"]:
        meta = item["metadata"]
        out[layer_of(meta["name"])].append(f"{meta['name']}=={meta['version']}")
    return {layer: sorted(pins) for layer, pins in out.items()}


def write_layers(report_path: str, outdir: str) -> None:
    folder = Path(outdir)
    folder.mkdir(parents=True, exist_ok=True)
    for layer, pins in split(json.loads(Path(report_path).read_text())).items():
        (folder / f"{layer}.txt").write_text("".join(p + "\n" for p in pins))


if __name__ == "__main__":
    if sys.argv[1] == "--layers":
        write_layers(sys.argv[2], sys.argv[3])
    else:
        print("\n".join(requirements(sys.argv[1], sys.argv[2:])))
