"""Continuous batching over a KV cache.

One engine thread owns the model. Each iteration it drops cancelled requests, admits waiting
requests into free cache slots (prefilling their prompts together), then runs one decode step for
every running sequence; sequences leave the batch as soon as they finish. Callers submit from any
thread and receive `Event`s through the callback they pass (the HTTP layer hands them to its event
loop). Setting max_batch_size to 1 gives one-request-at-a-time serving (the benchmark baseline).

`running[i]` always owns cache slot i (see serve_kv): a leaving sequence's slot is filled by the
last running one, so the batch stays packed in slots [0, len(running)).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from capstan_trainer.generation import kv
from capstan_trainer.generation.sampling import SamplingParams, choose, make_generator, top_logprobs
from capstan_trainer.generation.text import TextTracker
from capstan_trainer.model_load import LoadedModel

log = logging.getLogger("capstan.serve")


SURPRISAL_TOKENS = 128
SURPRISAL_EVERY = 8


class QueueFull(Exception):
    """More requests are waiting than the queue allows (HTTP 429)."""


@dataclass
class TokenLogprob:
    token_id: int
    logprob: float | None
    top: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class Event:
    """Progress of one choice (sequence) of a request."""

    index: int
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    prompt_logprobs: list[TokenLogprob] | None = None
    """prompt_logprobs: with echo and logprobs, on the choice's first event (the first is None)."""
    finish_reason: str | None = None


_ids = itertools.count(1)


class Request:
    def __init__(self, prompt_ids: list[int], params: SamplingParams, n: int, emit: Callable[[Event], None]):
        if not prompt_ids:
            raise ValueError("prompt_ids must not be empty")
        self.id = next(_ids)
        self.prompt_ids, self.params, self.n, self.emit = list(prompt_ids), params, n, emit
        self.cancelled = False
        self.arrival = time.monotonic()

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class _Seq:
    req: Request
    index: int
    slot: int
    tokens: list[int]
    gen: torch.Generator
    tracker: TextTracker
    generated: int = 0


class Engine:
    def __init__(
        self,
        loaded: LoadedModel,
        max_batch_size: int = 16,
        max_queue: int = 64,
        max_model_len: int = 0,
        prompt_observer: Callable[[list[int], float, int], None] | None = None,
        surprisal_every: int = SURPRISAL_EVERY,
    ):
        """prompt_observer(prompt ids, summed surprisal in nats, tokens it covers) is called once
        per request after its prefill (drift metrics); the surprisal is computed for one request
        in `surprisal_every` (0 tokens covered for the others). None skips it all."""
        self.prompt_observer, self.surprisal_every = prompt_observer, max(1, surprisal_every)
        self._observed = 0
        self.loaded = loaded
        self.model = loaded.model
        self.max_model_len = min(max_model_len or loaded.max_seq_len, loaded.max_seq_len)
        self.max_batch_size, self.max_queue = max_batch_size, max_queue
        self.cache = kv.KVCache(self.model, max_batch_size, self.max_model_len)
        self.device = self.model.embed_tokens.weight.device
        self.waiting: deque[Request] = deque()
        self.running: list[_Seq] = []
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stop = False
        self.steps = 0

    # ---- submission (any thread) ----------------------------------------------------------
    def submit(self, req: Request) -> None:
        if req.n > self.max_batch_size:
            raise ValueError(f"n {req.n} exceeds the server's max batch size {self.max_batch_size}")
        with self._cv:
            if len(self.waiting) >= self.max_queue + self.free_slots:
                raise QueueFull(
                    f"{len(self.waiting)} requests are already waiting (maxQueue {self.max_queue})"
                )
            self.waiting.append(req)
            self._cv.notify()

    @property
    def free_slots(self) -> int:
        return self.max_batch_size - len(self.running)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def num_running(self) -> int:
        return len({s.req.id for s in self.running})

    def idle(self) -> bool:
        return not self.waiting and not self.running

    # ---- the engine thread ----------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="capstan-engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._stop and not self.waiting and not self.running:
                    self._cv.wait()
                if self._stop:
                    return
            try:
                self.step()
            except Exception:  # a failing step must not leave clients hanging: end every sequence
                log.exception("engine step failed; failing the running requests")
                self._fail_all()

    def wake(self) -> None:
        with self._cv:
            self._cv.notify()

    def step(self) -> None:
        self._reap_cancelled()
        new = self._admit()
        if new:
            self._prefill(new)
        if self.running:
            self._decode()
        self.steps += 1

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Event]]:
        """Run prompts to completion and return each one's events (for evaluation and warm-up).
        Uses the engine thread when it runs, else steps in the caller's thread."""
        out: list[list[Event]] = [[] for _ in prompts]
        done = [threading.Event() for _ in prompts]

        def collector(i: int) -> Callable[[Event], None]:
            def emit(ev: Event) -> None:
                out[i].append(ev)
                if ev.finish_reason is not None:
                    done[i].set()

            return emit

        pending = deque(Request(p, params, 1, collector(i)) for i, p in enumerate(prompts))
        threaded = self._thread is not None and self._thread.is_alive()
        while pending or not all(d.is_set() for d in done):
            while pending and len(self.waiting) < self.max_queue + self.free_slots:
                self.submit(pending.popleft())
            if threaded:
                next(d for d in done if not d.is_set()).wait(timeout=1.0)
            else:
                self.step()
        return out

    # ---- batch membership -----------------------------------------------------------------
    def _reap_cancelled(self) -> None:
        with self._cv:
            self.waiting = deque(r for r in self.waiting if not r.cancelled)
        for s in [s for s in self.running if s.req.cancelled]:
            self._release(s)

    def _admit(self) -> list[_Seq]:
        new: list[_Seq] = []
        with self._cv:
            while self.waiting and self.waiting[0].n <= self.free_slots - len(new):
                req = self.waiting.popleft()
                for i in range(req.n):
                    tracker = TextTracker(self.loaded.tokenizer, req.params.stop, req.prompt_ids)
                    slot, gen = len(self.running) + len(new), make_generator(req.params.seed, i)
                    new.append(_Seq(req, i, slot, list(req.prompt_ids), gen, tracker))
            # Under the lock, so submit() never sees a request both gone from the queue and not
            # yet holding a slot (the queue bound stays exact); a failing prefill fails these too.
            self.running.extend(new)
        return new

    def _release(self, seq: _Seq) -> None:
        """Free `seq`'s slot, moving the last running sequence (and its cache rows) into it."""
        last = self.running.pop()
        if last is not seq:
            self.cache.move(last.slot, seq.slot, len(last.tokens))
            last.slot = seq.slot
            self.running[seq.slot] = last

    def _fail_all(self) -> None:
        for s in list(self.running):
            s.req.emit(Event(s.index, finish_reason="error"))
            self._release(s)

    # ---- model calls ----------------------------------------------------------------------
    def _prefill(self, seqs: list[_Seq]) -> None:
        T = max(len(s.tokens) for s in seqs)
        batch = torch.zeros(len(seqs), T, dtype=torch.long)
        for b, s in enumerate(seqs):
            batch[b, : len(s.tokens)] = torch.tensor(s.tokens)
        hidden = kv.prefill(self.model, self.cache, batch.to(self.device), seqs[0].slot)
        last = torch.tensor([len(s.tokens) - 1 for s in seqs], device=self.device)
        with torch.inference_mode():
            logits = self.model.lm_head(hidden[torch.arange(len(seqs), device=self.device), last]).float()
        for b, s in enumerate(seqs):
            if self.prompt_observer is not None and s.index == 0:
                self._observe_prompt(hidden[b, : len(s.tokens)], s.tokens)
            prompt_lp = None
            if s.req.params.echo and s.req.params.logprobs is not None:
                prompt_lp = self._prompt_logprobs(hidden[b, : len(s.tokens)], s.tokens, s.req.params.logprobs)
            if s.req.params.max_tokens == 0:
                s.req.emit(Event(s.index, prompt_logprobs=prompt_lp, finish_reason="length"))
                self._release(s)
                continue
            self._advance(s, logits[b], prompt_lp)

    def _observe_prompt(self, hidden: torch.Tensor, tokens: list[int]) -> None:
        """Surprisal of the prompt's first SURPRISAL_TOKENS tokens after the first, for one
        prompt in `surprisal_every`: the output projection over prompt tokens costs as much as
        that many decode steps (bench/serve_drift.py), and the (T, vocab) log-probabilities of a
        long prompt would not fit beside the batch."""
        scored = self._observed % self.surprisal_every == 0  # the first, then every k-th
        self._observed += 1
        n = min(len(tokens), SURPRISAL_TOKENS + 1) - 1 if scored else 0
        total = 0.0
        if n > 0:
            with torch.inference_mode():
                lp = torch.log_softmax(self.model.lm_head(hidden[:n]).float(), -1)  # (n, V)
                target = torch.tensor(tokens[1 : n + 1], device=lp.device)
                total = -float(lp.gather(1, target[:, None]).sum())
        self.prompt_observer(tokens, total, n)

    def _prompt_logprobs(self, hidden: torch.Tensor, tokens: list[int], k: int) -> list[TokenLogprob]:
        with torch.inference_mode():
            lp = torch.log_softmax(self.model.lm_head(hidden).float(), -1).cpu()  # (T, V)
        out = [TokenLogprob(tokens[0], None)]
        for t in range(1, len(tokens)):
            out.append(TokenLogprob(tokens[t], float(lp[t - 1, tokens[t]]), top_logprobs(lp[t - 1], k)))
        return out

    def _decode(self) -> None:
        seqs = list(self.running)
        toks = torch.tensor([s.tokens[-1] for s in seqs], device=self.device)
        pos = torch.tensor([len(s.tokens) - 1 for s in seqs], device=self.device)
        logits = kv.decode(self.model, self.cache, toks, pos).float()
        greedy = torch.argmax(logits, -1).tolist()
        for b, s in enumerate(seqs):
            self._advance(s, logits[b], None, greedy[b])

    def _advance(self, s: _Seq, logits: torch.Tensor, prompt_lp, greedy: int | None = None) -> None:
        """Choose the next token of `s`, send what it adds, and retire `s` when it is done."""
        p = s.req.params
        tok = greedy if (p.temperature == 0 and greedy is not None) else choose(logits, p, s.gen)
        lps = []
        if p.logprobs is not None:
            lp = torch.log_softmax(logits, -1).cpu()
            lps = [TokenLogprob(tok, float(lp[tok]), top_logprobs(lp, p.logprobs))]
        s.tokens.append(tok)
        s.generated += 1
        reason = None
        if tok == self.loaded.eos_id and not p.ignore_eos:
            reason, text = "stop", s.tracker.update(None, final=True)
        else:
            text = s.tracker.update(tok)
            if s.tracker.stopped:
                reason = "stop"
            elif s.generated >= p.max_tokens or len(s.tokens) >= self.max_model_len:
                reason = "length"
                text += s.tracker.update(None, final=True)
        s.req.emit(Event(s.index, text, [tok], lps, prompt_lp, reason))
        if reason is not None:
            self._release(s)
