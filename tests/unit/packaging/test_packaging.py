"""The distribution's shape: the operator installs and imports without torch, the workloads and
the operator never import each other, and the API imports neither."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


def _imported_modules(folder: str) -> dict[str, set[str]]:
    """Every top-level package each .py file under `folder` imports (statically)."""
    out: dict[str, set[str]] = {}
    for path in sorted((REPO / folder).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        out[str(path.relative_to(REPO))] = names
    return out


def test_operator_import_closure_has_no_torch():
    # Every operator module, imported the way `python -m capstan_operator` does, in a fresh process.
    # kubernetes.aio is left out of the operator image (images/operator/Containerfile).
    code = (
        "import pkgutil, sys, importlib, capstan_operator, capstan_operator.main\n"
        "for m in pkgutil.walk_packages(capstan_operator.__path__, 'capstan_operator.'):\n"
        "    if not m.name.endswith('__main__'):\n"
        "        importlib.import_module(m.name)\n"
        "top = {m.split('.')[0] for m in sys.modules} | {'.'.join(m.split('.')[:2]) for m in sys.modules}\n"
        "print(sorted(top & {'torch', 'capstan_trainer', 'kubernetes.aio'}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", f"the operator imported {done.stdout.strip()}"


def test_workloads_and_operator_do_not_import_each_other():
    trainer = {f: m & {"capstan_operator"} for f, m in _imported_modules("trainer").items()}
    operator = {f: m & {"capstan_trainer", "torch"} for f, m in _imported_modules("operator").items()}
    api = {
        f: m & {"capstan_operator", "capstan_trainer", "torch"} for f, m in _imported_modules("api").items()
    }
    for side in (trainer, operator, api):
        assert {f: m for f, m in side.items() if m} == {}


@pytest.mark.timeout(600)
def test_operator_extra_resolves_without_torch(tmp_path):
    # What `pip install '.[operator]'` would install into an empty environment, resolved against
    # the package index without installing anything.
    report = tmp_path / "report.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--dry-run",
            "--ignore-installed",
            "--report",
            str(report),
            f"{REPO}[operator]",
        ],
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    names = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert {"kopf", "kubernetes", "capstan"} <= names, names
    assert not {n for n in names if n == "torch" or n.startswith("nvidia-")}, sorted(names)


def test_builders_and_resolvers_do_no_io():
    # Pure by construction: they import neither the API client wrapper nor object storage.
    pure = [*REPO.glob("operator/*/build.py"), *REPO.glob("operator/*/resolve.py")]
    pure += [REPO / "operator" / f for f in ("children.py", "refs.py", "status.py")]
    pure.append(REPO / "operator" / "deployment" / "canary.py")
    io_modules = {"kube", "objectstore"}
    found = {}
    for path in pure:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("capstan_operator"):
                names = {a.name for a in node.names} | {node.module.rsplit(".", 1)[-1]}
                if names & io_modules:
                    found[str(path.relative_to(REPO))] = sorted(names & io_modules)
    assert len(pure) >= 12 and found == {}


def test_every_package_folder_is_in_the_distribution():
    """A package folder missing from [tool.setuptools] packages works from the checkout but is
    absent from the images (seen: capstan_trainer.prepare.stages, ModuleNotFoundError in a pod)."""
    import tomllib

    tool = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(tool["packages"])
    for name, folder in tool["package-dir"].items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder)
            package = ".".join([name, *rel.parts])
            assert package in listed, f"{init.parent} is not in pyproject.toml [tool.setuptools] packages"
