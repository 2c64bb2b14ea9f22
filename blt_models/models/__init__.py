"""Model families; importing this package registers every architecture."""

from .blt import BLT
from .cornet import CORnetR, CORnetRT, CORnetS, CORnetZ
from .resnet import ResNet

__all__ = ["BLT", "CORnetR", "CORnetRT", "CORnetS", "CORnetZ", "ResNet"]
