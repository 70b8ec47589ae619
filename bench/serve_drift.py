"""Cost of the drift metrics in the server's engine: the same prompts generated with the prompt
observer (capstan_trainer.serve.drift: surprisal of each prompt's first 256 tokens, its length and
byte tokens) and without it, in alternating rounds in one process; prints the throughput ratio.

Random weights (the cost does not depend on them), a word-level vocabulary of --vocab tokens,
--prompt-len-token prompts and --out-len output tokens each, one torch thread.

    python bench/serve_drift.py --preset test --vocab 32000
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch
from prometheus_client import CollectorRegistry
from tokenizers import Tokenizer, models

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from capstan_api.modelshape import preset  # noqa: E402
from capstan_trainer.generation.engine import Engine  # noqa: E402
from capstan_trainer.generation.sampling import SamplingParams  # noqa: E402
from capstan_trainer.model import Transformer  # noqa: E402
from capstan_trainer.model_load import LoadedModel  # noqa: E402
from capstan_trainer.serve.drift import DriftMetrics  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="test")
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--requests", type=int, default=32)
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--out-len", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--surprisal-every", type=int, default=8)
    a = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = Transformer(preset(a.preset, vocab_size=a.vocab))
    model.init_weights(0)
    model.eval()
    tok = Tokenizer(models.WordLevel(vocab={f"w{i}": i for i in range(a.vocab)}, unk_token="w0"))
    loaded = LoadedModel(model=model, tokenizer=tok, eos_id=None, chat_template="")
    rng = random.Random(0)
    prompts = [[rng.randrange(a.vocab) for _ in range(a.prompt_len)] for _ in range(a.requests)]
    params = SamplingParams(max_tokens=a.out_len, temperature=0, ignore_eos=True)
    drift = DriftMetrics(CollectorRegistry(), tok)
    engines = {
        "without": Engine(loaded, max_batch_size=8, max_queue=1 << 20),
        "with drift": Engine(
            loaded,
            max_batch_size=8,
            max_queue=1 << 20,
            prompt_observer=drift.observe,
            surprisal_every=a.surprisal_every,
        ),
    }
    best = {k: float("inf") for k in engines}
    for _ in range(a.rounds):
        for name, engine in engines.items():
            t0 = time.process_time()
            engine.generate(prompts, params)
            best[name] = min(best[name], time.process_time() - t0)
    tokens = a.requests * a.out_len
    for name, s in best.items():
        print(f"{name:>10}: {tokens / s:8.1f} output tokens per CPU-second (best of {a.rounds})")
    print(f"ratio with / without drift metrics: {best['without'] / best['with drift']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
