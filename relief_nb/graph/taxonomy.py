"""How the walk classifies what it meets: modules and functions by role (elementwise with ``f(0) = 0``, pooling,
reshape, addition, reduction, metadata). One table, read by :mod:`relief_nb.graph.trace` and its op families."""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ACTIVATION_FUNCTIONS", "ACTIVATION_METHODS", "ACTIVATION_MODULES", "ADD", "MEAN", "METADATA",
           "MUL", "POOL_FUNCTIONS", "POOL_MODULES", "RESHAPE", "TRANSPOSE"]

ACTIVATION_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Tanh, nn.Hardswish, nn.ELU,
                      nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity)
POOL_MODULES = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
ACTIVATION_FUNCTIONS = {F.relu, torch.relu, F.relu6, F.leaky_relu, F.gelu, F.silu, torch.tanh, F.tanh,
                        F.hardswish, F.elu, F.dropout, torch.nn.functional.dropout2d, torch.clone}
ACTIVATION_METHODS = {"relu", "relu_", "tanh", "contiguous", "clone", "float", "to", "detach"}
POOL_FUNCTIONS = {F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d}
RESHAPE = {torch.flatten, "flatten", "view", "reshape"}
TRANSPOSE = {"transpose", torch.transpose, "permute", torch.permute}
ADD = {operator.add, operator.iadd, torch.add, "add", "add_"}
MUL = {operator.mul, torch.mul, "mul"}
METADATA = {"size", "dim", "shape", "dtype", "device", "ndim", "numel"}
MEAN = {torch.mean, "mean", torch.sum, "sum", torch.amax, "amax"}
