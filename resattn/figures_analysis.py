"""Moved to resattn.viz (issue 17): a temporary re-export while the pages move over."""
from .viz import *  # noqa: F403
from .viz import __all__  # noqa: F401
from .viz import panels_figure as maps_row_figure  # noqa: F401
