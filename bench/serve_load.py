"""Load generator after `vllm bench serve`: Poisson arrivals at a request rate (inf = all at
once), fixed prompt and output lengths, streaming completions. Reports TTFT, TPOT, ITL and
end-to-end p50/p99, requests/s and output tokens/s; with --compare it starts the server twice
(batching on, and --max-batch-size 1) and prints the throughput ratio measured in the same run.
Beside wall-clock throughput it prints output tokens per CPU-second of the server process: on a
shared machine other tenants' load changes between the two runs move the wall-clock ratio, much
less the CPU-time one.

    python bench/serve_load.py --preset test --clients 16 --requests 64 --compare
    python bench/serve_load.py --url http://host:8000 --requests 200 --rate 4
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


async def one(session, url: str, prompt: list[int], out_len: int) -> dict:
    body = {"prompt": prompt, "max_tokens": out_len, "temperature": 0, "ignore_eos": True, "stream": True}
    t0 = time.perf_counter()
    times = []
    async with session.post(url + "/v1/completions", json=body) as r:
        if r.status != 200:
            return {"ok": False, "status": r.status}
        async for raw in r.content:
            line = raw.decode().strip()
            if line.startswith("data: ") and line != "data: [DONE]" and json.loads(line[6:])["choices"]:
                times.append(time.perf_counter())
    end = time.perf_counter()
    itl = [b - a for a, b in zip(times, times[1:], strict=False)]
    return {
        "ok": True,
        "ttft": times[0] - t0,
        "e2e": end - t0,
        "itl": itl,
        "tokens": len(times),
        "tpot": (end - times[0]) / max(1, len(times) - 1),
    }


async def run_load(
    url: str, n: int, clients: int, rate: float, in_len: int, out_len: int, vocab: int
) -> dict:
    rng = random.Random(0)
    prompts = [[rng.randrange(vocab) for _ in range(in_len)] for _ in range(n)]
    sem = asyncio.Semaphore(clients)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3600)) as session:

        async def limited(p):
            async with sem:
                return await one(session, url, p, out_len)

        t0 = time.perf_counter()
        tasks = []
        for p in prompts:
            tasks.append(asyncio.create_task(limited(p)))
            if rate != float("inf"):
                await asyncio.sleep(rng.expovariate(rate))
        results = await asyncio.gather(*tasks)
        wall = time.perf_counter() - t0
    ok = [r for r in results if r["ok"]]
    toks = sum(r["tokens"] for r in ok)
    itl = [x for r in ok for x in r["itl"]]
    samples = {k: [r[k] for r in ok] for k in ("ttft", "tpot", "e2e")} | {"itl": itl}
    return {
        "requests": len(ok),
        "failed": len(results) - len(ok),
        "seconds": round(wall, 2),
        "requests_per_s": round(len(ok) / wall, 3),
        "output_tokens_per_s": round(toks / wall, 1),
        **{f"{k}_p{q}_ms": _ms(pct(xs, q)) for k, xs in samples.items() for q in (50, 99)},
        "ttft_mean_ms": _ms(statistics.mean(samples["ttft"])) if ok else None,
    }


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 1)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def model_for_preset(preset: str, root: Path) -> tuple[str, int]:
    """A randomly initialised HF export of a preset (speed does not depend on the weights)."""
    import json as _json

    from safetensors.torch import save_file

    from capstan_api.hfmodel import hf_config
    from capstan_trainer.model import Transformer
    from capstan_trainer.model import preset as make
    from tests.support.tiny_model import tokenizer_json

    vocab = 32000 if preset != "test" else 107
    cfg = make(preset, vocab_size=vocab, max_seq_len=1024)
    model = Transformer(cfg)
    model.init_weights(0)
    out = root / preset
    out.mkdir(parents=True)
    tensors = {
        f"model.{k}": v.contiguous()
        for k, v in model.state_dict().items()
        if k != "lm_head.weight" or not cfg.tie_embeddings
    }
    save_file(tensors, str(out / "model.safetensors"))
    (out / "config.json").write_text(_json.dumps(hf_config(cfg, "float32", [])))
    (out / "tokenizer.json").write_text(tokenizer_json())
    del model
    return str(out), min(vocab, 100)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", help="an already running server; else one is started from --preset")
    p.add_argument("--preset", default="test")
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--clients", type=int, default=16, help="concurrent clients (max in flight)")
    p.add_argument("--rate", type=float, default=float("inf"), help="requests/s, Poisson; inf = all at once")
    p.add_argument("--input-len", type=int, default=32)
    p.add_argument("--output-len", type=int, default=64)
    p.add_argument("--compare", action="store_true", help="also run with batching off and print the ratio")
    p.add_argument("--threads", default="", help="OMP_NUM_THREADS for the server")
    a = p.parse_args()
    if a.url:
        print(
            json.dumps(
                asyncio.run(run_load(a.url, a.requests, a.clients, a.rate, a.input_len, a.output_len, 100))
            )
        )
        return 0
    from tests.support import server_proc

    if a.threads:
        os.environ["OMP_NUM_THREADS"] = a.threads
    with tempfile.TemporaryDirectory() as tmp:
        model, vocab = model_for_preset(a.preset, Path(tmp))
        rows = {}
        for label, batch in [("batched", str(a.clients))] + ([("one-at-a-time", "1")] if a.compare else []):
            flags = ["--max-batch-size", batch, "--max-queue", "100000", "--max-model-len", "1024"]
            s = server_proc.start(model, f"{tmp}/{label}.log", *flags, ready_within_s=600)
            try:
                cpu0 = cpu_seconds(s.proc.pid)
                rows[label] = asyncio.run(
                    run_load(s.url, a.requests, a.clients, a.rate, a.input_len, a.output_len, vocab)
                )
                cpu = cpu_seconds(s.proc.pid) - cpu0
                toks = rows[label]["output_tokens_per_s"] * rows[label]["seconds"]
                rows[label] |= {
                    "server_cpu_s": round(cpu, 1),
                    "output_tokens_per_cpu_s": round(toks / cpu, 1),
                }
            finally:
                s.stop()
            print(json.dumps({"preset": a.preset, "mode": label, **rows[label]}), flush=True)
        if a.compare:
            b, one = rows["batched"], rows["one-at-a-time"]
            ratio = b["output_tokens_per_s"] / one["output_tokens_per_s"]
            cpu_ratio = b["output_tokens_per_cpu_s"] / one["output_tokens_per_cpu_s"]
            print(
                json.dumps(
                    {
                        "preset": a.preset,
                        "clients": a.clients,
                        "throughput_ratio_batched_vs_one_at_a_time": round(ratio, 2),
                        "per_cpu_second_ratio": round(cpu_ratio, 2),
                    }
                )
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
