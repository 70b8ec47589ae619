"""`python -m capstan_trainer.evaluate`: the entrypoint; the workload itself is `evaluate.py`."""

import sys

from capstan_trainer.evaluate.evaluate import main

sys.exit(main())
