"""`python -m capstan_trainer.prepare`: the entrypoint; the workload itself is `prepare.py`."""

import sys

from capstan_trainer.prepare.prepare import main

sys.exit(main())
