"""`python -m capstan_operator`: run the operator (see main.py)."""

import sys

from capstan_operator.main import run

if __name__ == "__main__":
    sys.exit(run())
