"""iqaguard: an image classifier served by Triton that knows when not to trust itself."""

__version__ = "0.1.0"
