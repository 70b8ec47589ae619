"""`python -m capstan_trainer.serve`: the entrypoint; the workload itself is `serve.py`."""

import sys

from capstan_trainer.serve.serve import main

sys.exit(main())
