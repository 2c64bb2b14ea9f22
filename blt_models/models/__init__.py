"""Model families; importing this package registers every architecture."""

from .blt import BLT

__all__ = ["BLT"]
