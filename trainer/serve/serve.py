"""OpenAI-compatible inference server.

    python -m capstan_trainer.serve --model URI [--host H --port P] [--max-batch-size 16]
        [--max-queue 64] [--max-model-len 0] [--served-model-name NAME] [--device auto]
        [--max-prompts-per-request 16] [--request-timeout-seconds 600] [--max-body-bytes 8388608]

With $CAPSTAN_API_KEY set (from a Secret; or --api-key), /v1/ requests need
`Authorization: Bearer <key>`, as with vLLM's --api-key; /healthz, /readyz and /metrics stay open.

URI is a checkpoint (step folder or root) or a Hugging Face export directory. The HTTP server
starts first (/healthz answers, /readyz says 503 until the model is loaded and a one-token
generation succeeded). SIGTERM drains: new requests get 503, in-flight ones finish (up to
--drain-seconds), then the process exits 0. The host defaults to $POD_IP, else 0.0.0.0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import time

import torch
from aiohttp import web
from prometheus_client import CollectorRegistry

from capstan_api.network import listen_address
from capstan_trainer import model_load
from capstan_trainer.generation.engine import Engine
from capstan_trainer.generation.sampling import SamplingParams
from capstan_trainer.serve import fault_hook
from capstan_trainer.serve.app import make_app
from capstan_trainer.serve.drift import DriftMetrics
from capstan_trainer.serve.state import Limits, ServerState

log = logging.getLogger("capstan.serve")

DTYPES = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="capstan_trainer.serve", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="checkpoint or HF export URI")
    p.add_argument("--host", default=listen_address(os.environ.get("POD_IP")))
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--served-model-name", default="", help="model id in the API; default: last URI part")
    p.add_argument("--tokenizer", default="", help="tokenizer.json URI overriding the model's")
    p.add_argument(
        "--max-batch-size", type=int, default=16, help="sequences decoded together; 1 disables batching"
    )
    p.add_argument("--max-queue", type=int, default=64, help="requests that may wait; more get 429")
    p.add_argument("--max-model-len", type=int, default=0, help="prompt + completion tokens; 0: the model's")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument(
        "--dtype", choices=sorted(DTYPES), default="auto", help="auto: bfloat16 on GPU, float32 on CPU"
    )
    p.add_argument("--drain-seconds", type=float, default=30.0, help="how long SIGTERM waits for requests")
    p.add_argument(
        "--max-prompts-per-request", type=int, default=16, help="prompts in one completions request"
    )
    p.add_argument(
        "--request-timeout-seconds", type=float, default=600.0, help="longest a request may run; then 504"
    )
    p.add_argument(
        "--drift-surprisal-every",
        type=int,
        default=8,
        help="score the surprisal of one prompt in this many for the drift metrics (1 = every prompt)",
    )
    p.add_argument("--max-body-bytes", type=int, default=8 << 20, help="larger request bodies get 413")
    p.add_argument(
        "--api-key",
        default=os.environ.get("CAPSTAN_API_KEY", ""),
        help="default $CAPSTAN_API_KEY; empty: none",
    )
    a = p.parse_args(argv)
    for name in (
        "max_batch_size",
        "port",
        "max_prompts_per_request",
        "max_body_bytes",
        "drift_surprisal_every",
    ):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if a.max_queue < 0 or a.max_model_len < 0:
        p.error("--max-queue and --max-model-len must not be negative")
    if a.request_timeout_seconds <= 0:
        p.error("--request-timeout-seconds must be above 0")
    return a


def load_engine(a: argparse.Namespace, registry: CollectorRegistry) -> Engine:
    """The model loaded into an engine that reports prompts to drift metrics in `registry`."""
    device = model_load.device_for(a.device)
    dtype = DTYPES[a.dtype] or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    t0 = time.perf_counter()
    loaded = model_load.load(a.model, device=device, dtype=dtype, tokenizer_uri=a.tokenizer)
    drift = DriftMetrics(registry, loaded.tokenizer)
    engine = Engine(
        loaded,
        a.max_batch_size,
        a.max_queue,
        a.max_model_len,
        prompt_observer=drift.observe,
        surprisal_every=a.drift_surprisal_every,
    )
    log.info("loaded %s on %s (%s) in %.1fs", a.model, device, dtype, time.perf_counter() - t0)
    return engine


async def serve(a: argparse.Namespace) -> int:
    name = a.served_model_name or a.model.rstrip("/").rsplit("/", 1)[-1]
    limits = Limits(a.max_prompts_per_request, a.request_timeout_seconds, a.api_key)
    state = ServerState(model_name=name, limits=limits, fault_delay_s=fault_hook.delay_s(a.model))
    app = make_app(state, max_body_bytes=a.max_body_bytes)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, a.host, a.port)
    await site.start()
    log.info("listening on http://%s:%d (model %s)", a.host, a.port, name)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loading = asyncio.ensure_future(asyncio.to_thread(load_engine, a, state.metrics.registry))
    await asyncio.wait([loading, asyncio.ensure_future(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
    if not loading.done():  # stopped while loading
        await runner.cleanup()
        return 0
    try:
        engine = loading.result()
    except Exception as exc:
        log.error("could not load --model %s: %s", a.model, exc)
        await runner.cleanup()
        return 1
    state.attach(engine)
    engine.start()
    warm = SamplingParams(max_tokens=1, temperature=0)
    await asyncio.to_thread(engine.generate, [[engine.loaded.eos_id or 0]], warm)
    state.ready = True
    log.info("ready")
    await stop.wait()
    # ---- drain ----
    state.draining = True
    log.info("draining %d in-flight requests (up to %.0fs)", state.inflight, a.drain_seconds)
    deadline = time.monotonic() + a.drain_seconds
    while (state.inflight or not engine.idle()) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    if state.inflight:
        log.warning("drain deadline passed with %d requests in flight", state.inflight)
    await runner.cleanup()
    engine.stop()
    log.info("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    a = parse_args(argv)
    return asyncio.run(serve(a))
