"""`python -m resattn.bench`."""
import sys

from .cli import main

sys.exit(main())
