"""The continuous-batching engine in-process: sequences joining and leaving a running batch keep
their own cache rows, so every one still decodes exactly as the trainer's model does (same tokens,
same log-probabilities as a full forward pass without a cache)."""

from __future__ import annotations

import torch

from capstan_trainer import model_load
from capstan_trainer.generation.engine import Engine, Event, Request
from capstan_trainer.generation.sampling import SamplingParams
from tests.support import tiny_model


def test_sequences_joining_and_leaving_the_batch_decode_like_the_trainer(tiny):
    engine = Engine(model_load.load(tiny.export_uri), max_batch_size=3, max_queue=16)
    # Different prompt lengths and output lengths: sequences finish at different steps, the last
    # one moves into a freed slot, and waiting requests join mid-batch.
    cases = [
        ([5, 6, 7], 9),
        ([50, 52], 2),
        ([97, 98, 99, 0], 5),
        ([20], 7),
        ([31, 32, 33, 34, 35], 1),
        ([60, 61], 4),
        ([10, 12, 13], 6),
        ([80], 3),
    ]
    outputs: dict[int, list[int]] = {}
    logprobs: dict[int, list[float]] = {}
    done: dict[int, str] = {}

    def collect(i: int):
        def emit(ev: Event) -> None:
            outputs.setdefault(i, []).extend(ev.token_ids)
            logprobs.setdefault(i, []).extend(lp.logprob for lp in ev.logprobs)
            if ev.finish_reason is not None:
                done[i] = ev.finish_reason

        return emit

    for i, (prompt, n) in enumerate(cases):
        params = SamplingParams(max_tokens=n, temperature=0, ignore_eos=True, logprobs=0)
        engine.submit(Request(prompt, params, 1, collect(i)))
    for _ in range(200):
        if engine.idle():
            break
        engine.step()
        assert [s.slot for s in engine.running] == list(range(len(engine.running)))
    assert len(done) == len(cases), f"engine did not finish every request within 200 steps: {done}"
    for i, (prompt, n) in enumerate(cases):
        assert outputs[i] == tiny_model.greedy_reference(tiny, prompt, n), f"request {i}"
        assert done[i] == "length"
        # The counting model's argmax barely depends on the context; its log-probabilities do.
        full = torch.tensor([prompt + outputs[i]])
        with torch.no_grad():
            lp = torch.log_softmax(tiny_model.trainer_model(tiny)(full)[0].float(), -1)
        expected = [float(lp[len(prompt) - 1 + j, t]) for j, t in enumerate(outputs[i])]
        assert torch.allclose(torch.tensor(logprobs[i]), torch.tensor(expected), atol=1e-4), f"request {i}"
