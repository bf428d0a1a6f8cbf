"""`python -m attnseg.cli VERB ...` (torchrun starts training this way)."""
import sys

from . import main

sys.exit(main())
