"""Errors a user can cause. Each message is a sentence that says what to do."""


class ResattnError(ValueError):
    """Base class for every error caused by user input (files, names, options)."""


class ImageError(ResattnError):
    """The image could not be read: not an image, truncated, or too large."""


class CheckpointError(ResattnError):
    """The checkpoint could not be loaded: missing, corrupt, unsafe or mismatched."""
