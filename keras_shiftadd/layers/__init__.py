"""Multiplication-free and hybrid Keras layers."""

from keras_shiftadd.layers.adder import AddConv2D, AddDense, adder_conv2d, adder_dense
from keras_shiftadd.layers.hybrid import (
    HybridBatchNormalization,
    HybridConv2D,
    HybridDense,
    HybridDepthwiseConv2D,
)
from keras_shiftadd.layers.reshape import HybridFlatten, HybridReshape
from keras_shiftadd.layers.shift import ShiftConv2D, ShiftDense, ShiftDepthwiseConv2D

__all__ = [
    "AddConv2D",
    "AddDense",
    "HybridBatchNormalization",
    "HybridConv2D",
    "HybridDense",
    "HybridDepthwiseConv2D",
    "HybridFlatten",
    "HybridReshape",
    "ShiftConv2D",
    "ShiftDense",
    "ShiftDepthwiseConv2D",
    "adder_conv2d",
    "adder_dense",
]
