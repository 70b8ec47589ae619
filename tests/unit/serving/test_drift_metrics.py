"""Drift metrics of live prompts, end to end in one process: the HTTP server with the tiny
model answers a stream of in-distribution prompts (counting text like its training data), then
out-of-distribution ones (the same words shuffled, and words it never saw); its /metrics, read
as the operator reads them, score low against the validation split, then high."""

from __future__ import annotations

import asyncio
import dataclasses
import random

import numpy as np

from capstan_api.drift import score
from capstan_operator.config import OperatorConfig
from capstan_operator.deployment import drift as operator_drift
from capstan_trainer import model_load
from capstan_trainer.generation.engine import Engine
from capstan_trainer.serve.app import make_app
from capstan_trainer.serve.drift import DriftMetrics
from capstan_trainer.serve.state import ServerState


async def _serve_and_scrape(tiny, batches: list[list[str]], every: int = 1) -> list[str]:
    from aiohttp.test_utils import TestClient, TestServer

    loaded = model_load.load(tiny.export_uri)
    state = ServerState(model_name="tiny")
    drift = DriftMetrics(state.metrics.registry, loaded.tokenizer)
    engine = Engine(
        loaded, max_batch_size=8, max_queue=64, prompt_observer=drift.observe, surprisal_every=every
    )
    state.attach(engine)
    engine.start()
    state.ready = True
    scraped = []
    async with TestClient(TestServer(make_app(state))) as client:
        for prompts in batches:
            for p in prompts:
                r = await client.post("/v1/completions", json={"model": "tiny", "prompt": p, "max_tokens": 1})
                assert r.status == 200, await r.text()
            scraped.append(await (await client.get("/metrics")).text())
    engine.stop()
    return scraped


def test_in_distribution_prompts_score_low_and_shifted_ones_high(tiny):
    rng = random.Random(0)
    in_dist = tiny.validation_texts * 2
    words = [w for t in tiny.validation_texts for w in t.split()]
    shuffled = [" ".join(rng.sample(words, 12)) for _ in range(24)]
    unseen = [" ".join(f"z{rng.randrange(1000)}" for _ in range(3)) for _ in range(24)]
    first, second = asyncio.run(_serve_and_scrape(tiny, [in_dist, shuffled + unseen]))

    live_in = operator_drift.combine([operator_drift.parse(first)])
    assert live_in.texts == len(in_dist) and live_in.byte_fallback_tokens == 0
    assert sum(live_in.length_counts) == len(in_dist)
    # The reference as the operator reads it: the export's capstan.json -> the dataset's manifest.
    cfg = dataclasses.replace(OperatorConfig(), allowed_uri_schemes=("file",))
    reference, why = operator_drift.reference(tiny.export_uri, cfg)
    assert reference is not None, why
    assert reference.texts == len(tiny.validation_texts) and reference.surprisal > 0
    calm = score(reference, live_in)
    assert calm.psi < 0.01 and calm.score < 0.5, calm

    live_all = operator_drift.combine([operator_drift.parse(second)])
    assert live_all.texts == len(in_dist) + 48
    assert live_all.byte_fallback_tokens == 24 * 3  # every unseen word is the unknown token
    drifted = score(reference, live_all)
    assert drifted.surprisal_change > 0.5 and drifted.psi > 0.1
    assert drifted.score > 10 * max(calm.score, 0.01), (calm, drifted)
    print(f"drift in-distribution {calm}; after shifted prompts {drifted}")


def test_one_prompt_is_counted_once_with_its_surprisal(tiny):
    (text,) = asyncio.run(_serve_and_scrape(tiny, [["w1 w2 w3 w4"]]))
    live = operator_drift.combine([operator_drift.parse(text)])
    assert (live.texts, live.tokens) == (1, 4) and live.length_counts[0] == 1
    assert np.isfinite(live.surprisal) and live.surprisal > 0


def test_surprisal_is_sampled_but_lengths_are_counted_for_every_prompt(tiny):
    prompts = [f"w{k} w{k + 1} w{k + 2}" for k in range(10)]
    (text,) = asyncio.run(_serve_and_scrape(tiny, [prompts], every=4))
    stats, nats, scored = operator_drift.parse(text)
    assert stats.texts == 10 and stats.tokens == 30
    assert scored == 3 * 2  # prompts 1, 5 and 9: two tokens each have a prefix
