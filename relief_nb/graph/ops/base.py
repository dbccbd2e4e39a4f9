"""The walker's state and the helpers every op family uses: where a node is, refusing it, passing units through."""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.fx as fx
from torch import nn

from ..nodes import Back, Gate, GraphLayer, Merge, Norm, UnitMap, UnsupportedModuleError, fixed_map, shape_of

__all__ = ["TORCH_DIR", "WalkerBase", "ignored"]


def ignored(path: str, ignore: tuple[str, ...]) -> bool:
    """Whether module ``path`` is one named in ``ignore=`` or lies inside one."""
    return any(path == p or path.startswith(p + ".") for p in ignore)


TORCH_DIR = str(Path(torch.__file__).resolve().parent)  # frames of torch itself, skipped when naming a line


def _source_line(node: fx.Node) -> str:
    """``, at file.py:42: code`` from the stack trace fx recorded for ``node`` (empty when none was)."""
    trace = node.meta.get("stack_trace") or ""
    frames = [f for f in re.findall(r'File "([^"]+)", line (\d+), in \w+\n\s*(.*)', trace)
              if not f[0].startswith(TORCH_DIR)]  # fx's own frames
    if not frames:
        return ""
    path, lineno, code = frames[-1]
    return f", at {Path(path).name}:{lineno}: {code.strip()}"


class WalkerBase:
    """One walk over a traced model: per fx node, its :class:`UnitMap` (``vals``), how needed channels of its output
    map back to its inputs (``back``) and how its unit axis follows its inputs (``links``, for export)."""

    def __init__(self, model: nn.Module, gm: fx.GraphModule, input_shape: tuple[int, ...],
                 ignore: tuple[str, ...]) -> None:
        self.model, self.gm, self.input_shape, self.ignore = model, gm, input_shape, ignore
        self.modules = dict(model.named_modules())
        self.vals: dict[str, UnitMap | None] = {}
        self.layers: dict[str, GraphLayer] = {}
        self.node_layer: dict[str, str] = {}
        self.merges: list[Merge] = []
        self.norms: list[Norm] = []
        self.escapes: dict[str, torch.Tensor] = {}
        self.back: dict[str, Back] = {}
        self.chain = True
        self.gates: dict[str, Gate] = {}  # fx node name of a gate mul -> gate
        self.links: dict[str, tuple] = {}  # fx node name -> how its unit axis relates to its inputs' (export)
        self.ignored_ops: frozenset[str] = frozenset()  # fx node names named in ignore=
        self.kept_whole: dict[str, str] = {}  # module path -> why it is left dense (its class and the reason)

    def where(self, node: fx.Node) -> str:
        """The module or op, the module that holds it and the source line that calls it (as ``ignore=`` and a
        reader need them)."""
        line = _source_line(node)
        if node.op == "call_module":
            return f"module {node.target} ({type(self.modules[node.target]).__name__}){line}"
        target = getattr(node.target, "__name__", str(node.target))
        stack = node.meta.get("nn_module_stack")
        holder = list(stack)[-1] if stack else ""
        inside = f" inside module {holder}" if holder else " in the model's own forward"
        return f"op {target} (fx node {node.name}{inside}){line}"

    def refuse(self, node: fx.Node, why: str) -> None:
        raise UnsupportedModuleError(
            f"{self.where(node)}: {why}; NNrelief cannot prune through it. Pass the path of the module that "
            "contains it (or, for an op, its fx node name) in ignore= to leave that part dense")

    def escape(self, val: UnitMap) -> None:
        for src, idx in val.cmap.items():
            hit = idx[idx >= 0]
            self.escapes[src][hit] = True

    def tensor_args(self, node: fx.Node) -> list[fx.Node]:
        return [a for a in node.all_input_nodes if self.vals.get(a.name) is not None]

    def passthrough(self, node: fx.Node, src: fx.Node) -> None:
        self.vals[node.name] = self.vals[src.name]
        self.back[node.name] = lambda need, src=src: [(src, need)]
        self.links[node.name] = ("pass", src)

    def moved(self, node: fx.Node, src: fx.Node, val: UnitMap, axis: int) -> None:
        """The same units on another axis (transpose, permute, a reduction or an index of other dims)."""
        self.vals[node.name] = UnitMap(axis, val.cmap, val.merged, val.fixed, val.offset)
        self.back[node.name] = lambda need, src=src: [(src, need)]
        self.links[node.name] = ("pass", src)

    def offset_passthrough(self, node: fx.Node, src: fx.Node) -> None:
        """An elementwise function with ``f(0) != 0`` (sigmoid, softplus, ...): units pass through, but a removed
        unit emits ``f(0)``: its channel counts as merged (no dead-unit rule) and is offset (a layer reading it keeps,
        at export, every channel it reads)."""
        val = self.vals[src.name]
        self.vals[node.name] = UnitMap(val.axis, val.cmap, torch.ones_like(val.merged), val.fixed, True)
        self.back[node.name] = lambda need, src=src: [(src, need)]
        self.links[node.name] = ("pass", src)

    def opaque(self, node: fx.Node) -> None:
        """All tensor inputs are read whole; the output is fixed."""
        ins = self.tensor_args(node)
        for a in ins:
            self.escape(self.vals[a.name])
        self.vals[node.name] = fixed_map() if shape_of(node) is not None else None
        self.back[node.name] = lambda need, ins=ins: [(a, None) for a in ins]
        self.links[node.name] = ("opaque", ins)

    def read_whole(self, node: fx.Node, why: str) -> None:
        """What cannot be followed unit by unit but can be read whole (:meth:`opaque`): every unit reaching ``node``
        is kept and its output carries none, so pruning goes on around it (the layers before and after still lose
        connections). Listed in the pass's report (``kept_whole``, the rows of ``layer_table``) with ``why``."""
        self.opaque(node)
        stack = node.meta.get("nn_module_stack")
        holder = f"{list(stack)[-1]}: " if stack else ""
        target = getattr(node.target, "__name__", str(node.target))
        self.kept_whole[f"{holder}{target} (fx node {node.name})"] = f"{why}{_source_line(node)}"

    def need_axis(self, node: fx.Node, val: UnitMap, axis: int, ndim: int) -> None:
        if not val.is_fixed and val.axis % ndim != axis % ndim:
            self.refuse(node, f"it needs the units on dim {axis}, but they are on dim {val.axis}")
