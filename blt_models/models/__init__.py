"""Model families; importing this package registers every architecture."""

from .blt import BLT
from .blt_vs import BLTVS
from .cornet import CORnetR, CORnetRT, CORnetS, CORnetZ
from .rcnn_sat import RcnnSatB, RcnnSatBL
from .resnet import ResNet

__all__ = [
    "BLT",
    "BLTVS",
    "CORnetR",
    "CORnetRT",
    "CORnetS",
    "CORnetZ",
    "RcnnSatB",
    "RcnnSatBL",
    "ResNet",
]
