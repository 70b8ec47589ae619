"""Per-document text stages (normalize, apply_filters, PII redact) against an earlier commit's.

    PYTHONPATH=.pypath python bench/prepare_text.py --baseline 0dbf728 [--mb 5]

The baseline's normalize.py, filters.py and pii.py are read from `--baseline` with git and run in
the same process on the same documents, as the mapper calls them: normalise, filter, redact the
kept ones. Documents: the unit tests' generated corpus (tests/unit/prepare/corpus.py) repeated to
`--mb`, and the same with a non-ASCII word and a dated, numbered line in every document (the paths
that send text to ftfy and to libphonenumber). Ratio = ours / baseline time (best of
`--repeat`, interleaved, CPU time); one-time set-up (loading the language model) is left out and printed apart.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from capstan_api.cleaning import Cleaning, Filters, Pii  # noqa: E402
from capstan_trainer.prepare import filters, normalize, pii  # noqa: E402
from tests.unit.prepare import corpus  # noqa: E402


def load_baseline(rev: str, tmp: Path) -> tuple:
    mods = []
    for name in ("normalize", "filters", "pii"):
        src = subprocess.run(
            ["git", "show", f"{rev}:trainer/prepare/{name}.py"], cwd=ROOT, check=True, capture_output=True
        ).stdout
        path = tmp / f"baseline_{name}.py"
        path.write_bytes(src)
        spec = importlib.util.spec_from_file_location(f"baseline_{name}", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        mods.append(mod)
    return tuple(mods)


def documents(mb: float, busy: bool) -> list[str]:
    texts = []
    for lines in corpus.build().files.values():
        for line in lines:
            try:
                t = json.loads(line).get("text")
            except (json.JSONDecodeError, AttributeError):
                continue
            if isinstance(t, str):
                texts.append(t)
    if busy:
        texts = [
            t.replace("The ", "The café’s ", 1) + "\nOn 2026-11-28 order 4829 3017 56 shipped." for t in texts
        ]
    out, size = [], 0
    while size < mb * 1e6:
        for t in texts:
            out.append(t)
            size += len(t.encode())
    return out


def run(docs: list[str], norm, filt, red) -> float:
    c, f, rules = Cleaning(), Filters(), red.build_rules(Pii())
    # CPU time of this (single-threaded) process: other work on a shared machine inflates wall time
    t0 = time.process_time()
    for d in docs:
        text, reason = filt.apply_filters(norm.normalize(d, c), f)
        if reason is None:
            red.redact(text, rules)
    return time.process_time() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", required=True, help="git revision whose stages are the baseline")
    ap.add_argument("--mb", type=float, default=5.0)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = load_baseline(args.baseline, Path(tmp))
    t0 = time.perf_counter()
    filters.apply_filters(corpus.good_doc(__import__("random").Random(0)), Filters())
    print(f"set-up (language model load, once per process): {time.perf_counter() - t0:.2f} s")
    for label, busy in (("generated corpus", False), ("+ non-ASCII and numbers in every doc", True)):
        docs = documents(args.mb, busy)
        mb = sum(len(d.encode()) for d in docs) / 1e6
        t_base = t_ours = float("inf")
        for _ in range(args.repeat):  # interleaved, so a busy moment on the machine hits both
            t_base = min(t_base, run(docs, *base))
            t_ours = min(t_ours, run(docs, normalize, filters, pii))
        print(
            f"{label}: {mb:.1f} MB, baseline {t_base / mb:.3f} s/MB ({mb / t_base:.1f} MB/s), "
            f"ours {t_ours / mb:.3f} s/MB ({mb / t_ours:.1f} MB/s), ratio {t_ours / t_base:.2f}"
        )


if __name__ == "__main__":
    main()
