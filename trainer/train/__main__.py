"""`python -m capstan_trainer.train`: the entrypoint; the workload itself is `train.py`."""

import sys

from capstan_trainer.train.train import main

sys.exit(main())
