"""`python -m resattn_app`: the same as `resattn-app`."""
import sys

from . import main

sys.exit(main())
