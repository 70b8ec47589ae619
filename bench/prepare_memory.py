"""Peak memory of a whole preparation run per million documents.

    PYTHONPATH=.pypath python bench/prepare_memory.py [--mb 20]

Runs prepare in a child process and reads its peak RSS; the baseline, measured the same way, is a
child that only imports the modules (interpreter, numpy, tokenizers). Prints peak above baseline,
scaled to a million documents, and the ratio of that to the input size.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.prepare_common import resource, write_corpus  # noqa: E402

IMPORTS = "import capstan_trainer.prepare"


def peak_kb(code: str) -> int:
    script = f"{code}\nimport resource\nprint(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True).stdout
    return int(out.strip().splitlines()[-1])


def main(mb: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        docs, size = write_corpus(root / "in", mb)
        (root / "ds.yaml").write_text(yaml.safe_dump(resource(str(root / "in"), str(root / "out"))))
        base = peak_kb(IMPORTS)
        run = peak_kb(
            "import contextlib, io\nfrom capstan_trainer.prepare import main\n"
            f"with contextlib.redirect_stdout(io.StringIO()): assert main(['-f', {str(root / 'ds.yaml')!r}]) == 0"
        )
    extra = (run - base) * 1024
    print(f"{docs} documents, {size / 1e6:.1f} MB of JSONL")
    print(f"peak RSS: run {run / 1024:.0f} MB, baseline (imports only) {base / 1024:.0f} MB")
    print(
        f"peak above baseline per million documents: {extra / docs * 1e6 / 1e9:.2f} GB "
        f"({extra / docs:.0f} bytes per document); ratio to input size = {extra / size:.1f}x"
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=20.0)
    main(ap.parse_args().mb)
