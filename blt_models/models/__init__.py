"""Model families; importing this package registers every architecture."""

from .blt import BLT
from .blt_vs import BLTVS
from .convrnn import ConvRNN
from .cornet import CORnetR, CORnetRT, CORnetS, CORnetZ
from .rcnn_sat import RcnnSatB, RcnnSatBL
from .resnet import ResNet

__all__ = [
    "BLT",
    "BLTVS",
    "ConvRNN",
    "CORnetR",
    "CORnetRT",
    "CORnetS",
    "CORnetZ",
    "RcnnSatB",
    "RcnnSatBL",
    "ResNet",
]
