"""Rank-aware logging, FLOPs/MFU accounting, and the progress file the operator reads.

`<checkpoint root>/progress.json` (its fields: `capstan_api.files.TrainingProgress`), written by
rank 0 at most every 10 s, and at once on phase changes, evaluations and commits.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import sys
import time
from dataclasses import dataclass, field

import torch
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from capstan_api import files
from capstan_api.capacity import PEAK_BF16_FLOPS, flops_per_token, peak_for  # noqa: F401 (re-exported)
from capstan_api.common import now_rfc3339
from capstan_api.network import TRAIN_METRICS_PORT_ENV, listen_address
from capstan_trainer import storage
from capstan_trainer.model import ModelConfig


def setup_logging(rank: int) -> None:
    """Rank 0 logs INFO to stderr; other ranks only warnings (stdout is reserved for metrics)."""
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(asctime)s [rank{rank}] %(name)s: %(message)s",
        stream=sys.stderr,
    )


def peak_flops(device: torch.device) -> tuple[float | None, str]:
    """(peak bf16 FLOP/s of one device, what was matched); (None, reason) where unknown or CPU."""
    if device.type != "cuda":
        return None, "cpu"
    return peak_for(torch.cuda.get_device_name(device))


def memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


@dataclass
class Throughput:
    """Tokens per second and MFU over the steps since the last `reset`."""

    flops_per_token: float
    peak: float | None
    """peak: one device's bf16 FLOP/s; None on CPU, for an unknown device, or not in bf16."""
    peak_name: str
    """peak_name: the table entry matched, or why there is none (named in the metrics)."""
    world: int
    tokens: int = 0
    """tokens: trained over all ranks since `since`."""
    steps: int = 0
    """steps: optimizer steps since `since`."""
    since: float = field(default_factory=time.perf_counter)

    @classmethod
    def start(
        cls, cfg: ModelConfig, seq_len: int, device: torch.device, param_dtype: torch.dtype, world: int
    ) -> Throughput:
        peak, name = peak_flops(device)
        if param_dtype != torch.bfloat16:
            peak = None  # the table is bf16 tensor-core peaks; fp32 MFU would mislead
        return cls(flops_per_token(cfg, seq_len), peak, name, world)

    def measure(self, device: torch.device) -> tuple[float, float | None]:
        """(tokens/s, MFU) since the last reset, once the device has finished its queued work."""
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        tps = self.tokens / (time.perf_counter() - self.since)
        mfu = tps / self.world * self.flops_per_token / self.peak if self.peak else None
        return tps, mfu

    def step_seconds(self) -> float:
        """Mean wall time of a step since the last reset."""
        return (time.perf_counter() - self.since) / max(self.steps, 1)

    def reset(self) -> None:
        self.tokens, self.steps, self.since = 0, 0, time.perf_counter()


class Exporter:
    """Prometheus gauges at :TRAIN_METRICS_PORT/metrics, beside progress.json. The first process
    of every pod serves (so every annotated pod answers a scrape); only rank 0 sets values, so the
    series come from one pod, labelled rank="0"."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(f"capstan_train_{name}", doc, ["rank"], registry=r)

        self.loss = gauge("loss", "Training loss of the last reported step.")
        self.eval_loss = gauge("eval_loss", "Validation loss of the last evaluation.")
        self.tokens_per_second = gauge("tokens_per_second", "Tokens trained per second, all ranks.")
        self.mfu = gauge("mfu", "Model FLOPs utilisation (0-1); absent on CPU or an unknown device.")
        self.step_seconds = gauge("step_seconds", "Mean wall time of a step since the last report.")
        self.step = gauge("step", "Optimizer steps done.")
        self.total_steps = gauge("total_steps", "Optimizer steps planned.")

    def serve_from_env(self) -> int | None:
        """Serves when TRAIN_METRICS_PORT_ENV names a port (the operator sets it in trainer pods; a run
        outside a pod opens no port) and this is the pod's first process (LOCAL_RANK 0). Listens
        on the pod IP where it is a loopback address (the local cluster), else 0.0.0.0."""
        port = os.environ.get(TRAIN_METRICS_PORT_ENV)
        if not port or os.environ.get("LOCAL_RANK", "0") != "0":
            return None
        addr = listen_address(os.environ.get("POD_IP"))
        try:
            start_http_server(int(port), addr=addr, registry=self.registry)
        except OSError as exc:  # metrics are not worth a failed run (e.g. the port taken on a host network)
            logging.getLogger("capstan.train").warning("not serving /metrics on %s:%s: %s", addr, port, exc)
            return None
        return int(port)

    def update(
        self,
        *,
        step: int,
        total_steps: int,
        loss: float,
        tps: float,
        mfu: float | None,
        step_s: float,
        eval_loss: float | None,
    ) -> None:
        self.step.labels("0").set(step)
        self.total_steps.labels("0").set(total_steps)
        self.loss.labels("0").set(loss)
        self.tokens_per_second.labels("0").set(tps)
        self.step_seconds.labels("0").set(step_s)
        if mfu is not None:
            self.mfu.labels("0").set(mfu)
        if eval_loss is not None:
            self.eval_loss.labels("0").set(eval_loss)


def emit(record: dict) -> None:
    """One JSON line on stdout (rank 0 calls it)."""
    print(json.dumps(record), flush=True)


class Progress:
    """`<checkpoint root>/progress.json` (`capstan_api.files.TrainingProgress`), rewritten at most
    every `min_interval_s` unless forced."""

    def __init__(self, root: str, total_steps: int, world: int, min_interval_s: float = 10.0):
        self.uri = storage.join(root, files.PROGRESS_FILE)
        self.state = files.TrainingProgress(
            total_steps=total_steps,
            world_size=world,
            restarts=int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")),
            spec_hash=os.environ.get(files.SPEC_HASH_ENV, ""),
        )
        self.min_interval_s = min_interval_s
        self._last_write = 0.0

    def update(self, force: bool = False, **fields) -> None:
        """Set `fields` (TrainingProgress attribute names); write when forced or due."""
        # The model ignores unknown keys (for readers); a misspelt field here must not vanish.
        unknown = fields.keys() - files.TrainingProgress.model_fields.keys()
        if unknown:
            raise TypeError(f"progress.json has no field(s) {sorted(unknown)}")
        self.state = files.TrainingProgress.model_validate({**self.state.model_dump(), **fields})
        now = time.time()
        if force or now - self._last_write >= self.min_interval_s:
            self.state.time = now_rfc3339()
            storage.write_bytes(self.uri, self.state.to_json().encode())
            self._last_write = now
