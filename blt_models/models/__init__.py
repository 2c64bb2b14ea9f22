"""Model families; importing this package registers every architecture."""

from .blt import BLT
from .blt_vs import BLTVS

__all__ = ["BLT", "BLTVS"]
