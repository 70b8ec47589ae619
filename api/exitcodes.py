"""Exit codes of the trainer's commands, the contract with the operator.

Under torchrun a worker's exit code does not reach the pod: the elastic agent restarts the
workers and finally exits 1 itself. So a pod should run `python -m capstan_trainer.train -f
run.yaml --validate-only` before torchrun; that process exits INVALID_CONFIG for a bad spec.
"""

OK = 0
"""OK: finished (also after early stopping)."""
FAILED = 1
"""FAILED: a crash or lost peer; retrying (torchrun's restart, a new pod) may succeed."""
INVALID_CONFIG = 3
"""INVALID_CONFIG: the spec, its data or its storage is wrong; retrying cannot help."""
STOPPED = 4
"""STOPPED: SIGTERM (suspend, preemption, pod deletion) stopped the run after it checkpointed the
step it had reached; not finished, so never 0 (a Job whose pods all exit 0 is Complete). A gang
pod reports it through `capstan_trainer.train.launch` (torchrun alone would exit 1); the operator
recreates such a gang without counting a restart."""
