"""The model's structure, traced once: which prunable layer feeds which (in the spirit of Torch-Pruning).

A forward pass of one example with hooks on the leaf modules records the execution order and every output
shape. From it :func:`trace_model` builds a :class:`PruningGraph`: the chain of prunable nodes, each a
:class:`LayerNode` (Conv2d or Linear, with the BatchNorm that normalises its output) or a :class:`BlockNode`
(a :class:`~relief_nb.models.ResidualBlock`). Channel-preserving modules (activations, pooling, dropout,
flatten) pass the units through; a Linear after a flatten reads ``in_features / channels`` features per
channel. Anything else is refused with its path in the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .models import OptionAShortcut, ResidualBlock

__all__ = ["BlockNode", "LayerNode", "PruningGraph", "UnsupportedModuleError", "trace_model"]

PASSTHROUGH = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
    nn.Dropout, nn.Dropout2d, nn.Flatten, nn.Identity,
)


class UnsupportedModuleError(TypeError):
    """The model contains a module NNrelief cannot reason about."""


@dataclass
class LayerNode:
    """A Conv2d or Linear layer: its units are its output channels / neurons."""

    name: str
    module: nn.Conv2d | nn.Linear
    bn: nn.BatchNorm2d | nn.BatchNorm1d | None = None
    bn_name: str | None = None
    out_shape: tuple[int, ...] = ()  # per example, e.g. (C, H, W) or (F,)
    in_shape: tuple[int, ...] = ()
    features_per_channel: int = 1  # > 1 for a Linear that reads a flattened conv map

    @property
    def kind(self) -> str:
        return "conv" if isinstance(self.module, nn.Conv2d) else "linear"

    @property
    def in_units(self) -> int:
        m = self.module
        units = m.in_channels if isinstance(m, nn.Conv2d) else m.in_features
        return units // self.features_per_channel

    @property
    def out_units(self) -> int:
        m = self.module
        return m.out_channels if isinstance(m, nn.Conv2d) else m.out_features

    def layers(self) -> list[LayerNode]:
        return [self]


@dataclass
class BlockNode:
    """A residual block: conv1 -> conv2 inside, plus a maskable option-A shortcut."""

    name: str
    module: ResidualBlock
    conv1: LayerNode = field(init=False)
    conv2: LayerNode = field(init=False)

    def __post_init__(self) -> None:
        b = self.module
        self.conv1 = LayerNode(f"{self.name}.conv1", b.conv1, b.bn1, f"{self.name}.bn1")
        self.conv2 = LayerNode(f"{self.name}.conv2", b.conv2, b.bn2, f"{self.name}.bn2")

    @property
    def in_units(self) -> int:
        return self.module.conv1.in_channels

    @property
    def out_units(self) -> int:
        return self.module.conv2.out_channels

    @property
    def pad(self) -> int:
        return self.module.shortcut.pad

    def layers(self) -> list[LayerNode]:
        return [self.conv1, self.conv2]


Node = LayerNode | BlockNode


@dataclass
class PruningGraph:
    """The chain of prunable nodes in execution order, with the input shape it was traced with."""

    nodes: list[Node]
    input_shape: tuple[int, ...]

    def layers(self) -> list[LayerNode]:
        """Every Conv2d / Linear layer in execution order (block convs included)."""
        return [layer for node in self.nodes for layer in node.layers()]

    def layer(self, name: str) -> LayerNode:
        for layer in self.layers():
            if layer.name == name:
                return layer
        raise KeyError(f"no prunable layer named {name!r}; layers: {[x.name for x in self.layers()]}")

    def blocks(self) -> list[BlockNode]:
        return [n for n in self.nodes if isinstance(n, BlockNode)]


def trace_model(model: nn.Module, input_shape: tuple[int, ...]) -> PruningGraph:
    """Trace ``model`` on one zero example of ``input_shape`` (C, H, W) and return its pruning graph.

    Raises :class:`UnsupportedModuleError` naming the module's path for a layer type NNrelief cannot prune
    (grouped or non-zero-padded convs, unknown modules with parameters, ...).
    """
    names = {m: n for n, m in model.named_modules()}
    order: list[tuple[nn.Module, tuple[int, ...], tuple[int, ...]]] = []
    handles = []

    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        order.append((module, tuple(args[0].shape[1:]), tuple(output.shape[1:])))

    def visit(module: nn.Module, prefix: str) -> None:
        if isinstance(module, ResidualBlock):
            handles.append(module.register_forward_hook(hook))
            for sub_name, sub in module.named_children():
                allowed = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, OptionAShortcut)
                if not isinstance(sub, allowed):
                    raise UnsupportedModuleError(f"module {prefix}.{sub_name} ({type(sub).__name__}) inside a "
                                                 "ResidualBlock is not supported")
            return
        children = list(module.named_children())
        if not children:
            handles.append(module.register_forward_hook(hook))
            return
        for child_name, child in children:
            visit(child, f"{prefix}.{child_name}" if prefix else child_name)

    visit(model, "")
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        example = torch.zeros(1, *input_shape, dtype=param.dtype if param is not None else torch.float32,
                              device=param.device if param is not None else None)
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

    nodes: list[Node] = []
    seen: set[int] = set()
    for module, in_shape, out_shape in order:
        if id(module) in seen:
            raise UnsupportedModuleError(f"module {names[module]} is called twice in forward; NNrelief needs "
                                         "each layer used once")
        seen.add(id(module))
        name = names[module]
        if isinstance(module, ResidualBlock):
            block = BlockNode(name, module)
            spatial = out_shape[1:]
            block.conv1.in_shape, block.conv1.out_shape = in_shape, (module.conv1.out_channels, *spatial)
            block.conv2.in_shape, block.conv2.out_shape = block.conv1.out_shape, out_shape
            nodes.append(block)
        elif isinstance(module, (nn.Conv2d, nn.Linear)):
            _check_layer(name, module)
            node = LayerNode(name, module, out_shape=out_shape, in_shape=in_shape)
            if isinstance(module, nn.Linear) and nodes:
                prev_units = nodes[-1].out_units
                if module.in_features % prev_units:
                    raise UnsupportedModuleError(
                        f"{name} reads {module.in_features} features, not a multiple of the {prev_units} units of "
                        "the layer before it")
                node.features_per_channel = module.in_features // prev_units
            nodes.append(node)
        elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):
            last = nodes[-1] if nodes else None
            if not isinstance(last, LayerNode) or last.bn is not None or last.out_units != module.num_features:
                raise UnsupportedModuleError(f"BatchNorm {name} does not directly follow a layer it normalises")
            last.bn, last.bn_name = module, name
        elif isinstance(module, PASSTHROUGH):
            continue
        elif any(True for _ in module.parameters(recurse=False)):
            raise UnsupportedModuleError(
                f"module {name} ({type(module).__name__}) has parameters NNrelief does not know how to prune; "
                "supported: Conv2d, Linear, BatchNorm, ResidualBlock and parameter-free activations/pools")
        else:
            raise UnsupportedModuleError(
                f"module {name} ({type(module).__name__}) is not supported: NNrelief passes units through "
                f"{', '.join(t.__name__ for t in PASSTHROUGH)} only")
    if not nodes:
        raise UnsupportedModuleError("the model has no Conv2d or Linear layer to prune")
    return PruningGraph(nodes, tuple(input_shape))


def _check_layer(name: str, module: nn.Module) -> None:
    if isinstance(module, nn.Conv2d):
        if module.groups != 1:
            raise UnsupportedModuleError(f"conv {name} has groups={module.groups}; only groups=1 is supported")
        if module.padding_mode != "zeros" or isinstance(module.padding, str):
            raise UnsupportedModuleError(f"conv {name}: only numeric zero padding is supported")
