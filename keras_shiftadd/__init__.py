"""keras-shiftadd: ShiftAddAug training of multiplication-free tiny CNNs."""

from keras_shiftadd import layers, quantizers
from keras_shiftadd.model import METHODS, ShiftAddAugModel, augment, method_name

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "ShiftAddAugModel",
    "augment",
    "layers",
    "method_name",
    "quantizers",
]
