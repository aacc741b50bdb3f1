"""`python -m resattn.report` (and `torchrun -m resattn.report`)."""
import sys

from .cli import main

sys.exit(main())
