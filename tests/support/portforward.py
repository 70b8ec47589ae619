"""`kubectl port-forward` as a test uses it: started in the background, its local port read from
what it prints, stopped on exit."""

from __future__ import annotations

import contextlib
import re
import selectors
import subprocess
import time

READY_DEADLINE_S = 30


@contextlib.contextmanager
def port_forward(cluster, namespace: str, target: str, remote_port: int):
    """Yield the local port that `kubectl port-forward <target> :<remote_port>` listens on."""
    proc = subprocess.Popen(
        ["kubectl", "port-forward", "-n", namespace, target, f":{remote_port}"],
        env=cluster.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        seen, end = [], time.monotonic() + READY_DEADLINE_S
        while time.monotonic() < end:
            if not sel.select(timeout=max(end - time.monotonic(), 0)):
                break
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            m = re.search(rf"Forwarding from 127\.0\.0\.1:(\d+) -> {remote_port}", line)
            if m:
                yield int(m.group(1))
                return
        raise AssertionError(
            f"kubectl port-forward {target} :{remote_port} printed no 'Forwarding from' line within "
            f"{READY_DEADLINE_S} s; it printed:\n{''.join(seen)}"
        )
    finally:
        proc.terminate()
        proc.wait(10)
