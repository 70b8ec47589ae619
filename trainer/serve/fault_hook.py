"""A test hook, not a feature: it exists for the tests only (tests/integration/test_prometheus.py,
a slow canary) and does nothing unless CAPSTAN_FAULT_SERVE_DELAY_S is set.

CAPSTAN_FAULT_SERVE_DELAY_S="0.8" with CAPSTAN_FAULT_SERVE_MODEL="<model URI>": a server of that
model finishes every generation request that much later (counted in its latency), as a slower
model would; servers of other models are unaffected, so one setting given to every pod slows the
canary alone."""

from __future__ import annotations

import os


def delay_s(model_uri: str) -> float:
    delay = os.environ.get("CAPSTAN_FAULT_SERVE_DELAY_S")
    if not delay or os.environ.get("CAPSTAN_FAULT_SERVE_MODEL", "") != model_uri:
        return 0.0
    return float(delay)
