"""The gang pod's entrypoint: `python -m capstan_trainer.train.launch [torchrun args]` runs torchrun
with those arguments and exits with its code, except that a pod whose workers stopped after
checkpointing (SIGTERM: suspend, preemption, pod deletion) exits `exitcodes.STOPPED`.

torchrun cannot say so itself: on SIGTERM its agent stops the workers and exits 1 whatever they
returned. So each worker that returns STOPPED touches a marker file in a directory this launcher
made ($CAPSTAN_STOP_MARKER), and the launcher reads it once torchrun is gone. The marker is local
to the pod (/dev/shm when writable), so a stale one from another pod cannot be seen.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from capstan_api import exitcodes

MARKER_ENV = "CAPSTAN_STOP_MARKER"


def mark_stopped() -> None:
    """Called by a worker that stopped after its checkpoint committed; no-op outside the launcher."""
    path = os.environ.get(MARKER_ENV)
    if path:
        Path(path).touch()


def exit_code(torchrun_code: int, stopped: bool) -> int:
    """The pod's exit code: torchrun's, unless the workers stopped after a checkpoint."""
    if torchrun_code == exitcodes.OK:
        return exitcodes.OK
    return exitcodes.STOPPED if stopped else torchrun_code


def finished_run(args: list[str]) -> str | None:
    """Why there is nothing left to train, when the run's progress.json says it ended: a pod that
    joins an elastic gang after the others finished would otherwise wait for a rendezvous that
    never comes. A run finished from another spec (SPEC_HASH_ENV differs: e.g. totalSteps or the
    early-stopping rule edited since) is not finished. None when the run is not finished (or
    nothing can be read)."""
    if "-f" not in args:
        return None
    from capstan_api.files import PROGRESS_FILE, SPEC_HASH_ENV, TrainingProgress, join
    from capstan_api.resource import load_resource
    from capstan_api.trainingrun import TrainingRunSpec
    from capstan_trainer import storage

    try:
        _, spec = load_resource(args[args.index("-f") + 1], TrainingRunSpec, "TrainingRun")
        doc = storage.read_bytes(join(spec.checkpoint.uri, PROGRESS_FILE))
        p = TrainingProgress.model_validate_json(doc)
    except (OSError, ValueError):
        return None
    same_spec = p.spec_hash == os.environ.get(SPEC_HASH_ENV, "")
    done = (
        same_spec and p.phase in ("Succeeded", "EarlyStopped") and p.total_steps == spec.optimizer.total_steps
    )
    return f"the run already {p.phase.lower()} at step {p.step}" if done else None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    done = finished_run(args)
    if done:
        print(f"launch: not starting torchrun: {done}", file=sys.stderr)
        return exitcodes.OK
    shm = "/dev/shm"
    tmp = tempfile.mkdtemp(prefix="capstan-", dir=shm if os.access(shm, os.W_OK) else None)
    marker = Path(tmp) / "stopped"
    env = {**os.environ, MARKER_ENV: str(marker)}
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", *args], env=env)
    # torchrun does the real work on these signals (it stops its workers); pass them on.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: proc.send_signal(signum))
    code = proc.wait()
    stopped = marker.exists()
    shutil.rmtree(tmp, ignore_errors=True)
    # A signal death (negative code) is the shell convention 128+N for the pod's status.
    return exit_code(code if code >= 0 else 128 - code, stopped)


if __name__ == "__main__":
    sys.exit(main())
