"""`python -m attnseg ...`: the same command line as `attnseg ...`."""
import sys

from .cli import main

sys.exit(main())
