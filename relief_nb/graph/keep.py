"""Which positions of every tensor's unit axis an exported (or compact) model keeps: step 1 of
:mod:`relief_nb.graph.export`. A unit that is alive, or a fixed signal, is kept; positions joined by an operation
must agree, so keeps are propagated to a fixed point over the graph's ``links`` (pass-through ops both ways, every
branch of a merge, ``cat`` part by part, flatten / reshape, GroupNorm by whole groups, depthwise convs channel by
channel; LayerNorm and grouped convs keep their whole axis, opaque ops read everything)."""

from __future__ import annotations

import torch
from torch import nn

from ..core.units import is_conv
from .trace import ModelGraph, alive_units, layer_reads

__all__ = ["kept_positions"]


def kept_positions(graph: ModelGraph, multiple: int = 1) -> dict[str, torch.Tensor]:
    """Per fx node carrying units: which positions of its unit axis the exported model keeps (step 1 above).

    ``multiple > 1`` also keeps removed units of every layer's output until its count is a multiple of it (or the
    whole axis), then propagates again: a removed unit emits zero, so keeping some changes nothing but shapes, and
    CPU kernels in channels-last run odd channel counts markedly slower than multiples of 8."""
    nodes = list(graph.gm.graph.nodes)
    keep = {name: graph.fixed_pos[name].clone() for name in graph.out_len}
    for node_name, layer_name in graph.node_layer.items():
        keep[node_name] |= alive_units(graph.layer(layer_name)).cpu()
    modules = dict(graph.gm.named_modules())
    changed = True
    while changed:
        changed = _propagate_once(graph, keep, modules, nodes)
        if not changed:  # at the fixed point, a tensor with no unit left keeps one (zero) channel: torch needs >= 1
            for k in keep.values():
                if not bool(k.any()):
                    k[0] = changed = True
    while multiple > 1 and _round_up(graph, keep, multiple):
        while _propagate_once(graph, keep, modules, nodes):
            pass
    return keep


def _round_up(graph: ModelGraph, keep: dict[str, torch.Tensor], multiple: int) -> bool:
    """Keep the first removed positions of each layer's output up to a multiple of ``multiple``; True if any."""
    changed = False
    for name in graph.node_layer:
        k = keep[name]
        extra = (~k).nonzero().flatten()[: -int(k.sum()) % multiple]
        if len(extra):
            k[extra] = changed = True
    return changed


def _propagate_once(graph: ModelGraph, keep: dict[str, torch.Tensor], modules: dict[str, nn.Module],
                    nodes: list) -> bool:
    """One forward and one backward sweep of keep propagation; True if anything grew."""

    def full(name: str) -> bool:
        if name not in keep or bool(keep[name].all()):
            return False
        keep[name][:] = True
        return True

    changed = False
    for node in nodes + nodes[::-1]:
        link = graph.links.get(node.name)
        if link is None:
            continue
        kind, n = link[0], node.name
        if kind == "opaque":
            for a in link[1]:
                changed |= full(a.name)
            continue
        if n not in keep:
            continue
        before = keep[n].clone()
        if kind in ("pass", "bn", "gate", "scale", "channel_scale", "ln", "channelwise", "gn", "perm"):
            src = link[1].name
            if src in keep:
                keep[n] |= keep[src]
                old = keep[src].clone()
                keep[src] |= keep[n]
                changed |= not torch.equal(old, keep[src])
            if kind in ("ln", "perm") or (kind == "scale" and link[2] is not None):  # would need slicing: keep all
                changed |= full(n) | full(src)
            elif kind == "gn":  # statistics shared by a group: a group goes only as a whole
                size = len(keep[n]) // link[2]
                groups = keep[n].view(link[2], size).any(dim=1, keepdim=True).expand(-1, size).reshape(-1)
                keep[n] |= groups
                if src in keep:
                    changed |= not torch.equal(keep[src], keep[src] | groups)
                    keep[src] |= groups
        elif kind == "reshape":
            src, line, size = link[1].name, link[2], link[3]
            keep[n] |= keep[src][line]
            back = torch.zeros(size, dtype=torch.bool).index_put((line,), keep[n], accumulate=True)
            old = keep[src].clone()
            keep[src] |= back
            changed |= not torch.equal(old, keep[src])
        elif kind == "pad":
            src, pad, size = link[1].name, link[2], link[3]
            keep[n][pad:pad + size] |= keep[src]
            old = keep[src].clone()
            keep[src] |= keep[n][pad:pad + size]
            changed |= not torch.equal(old, keep[src])
        elif kind == "merge":
            for a in link[1]:
                keep[n] |= keep[a.name]
            for a in link[1]:
                old = keep[a.name].clone()
                keep[a.name] |= keep[n]
                changed |= not torch.equal(old, keep[a.name])
        elif kind == "cat":
            parts, bounds = link[1], link[2]
            for i, t in enumerate(parts):
                if t.name in keep:
                    keep[n][bounds[i]:bounds[i + 1]] |= keep[t.name]
                    old = keep[t.name].clone()
                    keep[t.name] |= keep[n][bounds[i]:bounds[i + 1]]
                    changed |= not torch.equal(old, keep[t.name])
                else:
                    keep[n][bounds[i]:bounds[i + 1]] = True
        elif kind == "layer":
            m = modules[node.target]
            src = link[1].name
            if link[2] and src in keep:  # offset inputs: a removed unit still emits f(0) into what the layer reads
                reads = layer_reads(graph.layer(graph.node_layer[n]))
                changed |= not torch.equal(keep[src], keep[src] | reads)
                keep[src] |= reads
            if is_conv(m) and m.groups > 1:
                if src not in keep:  # reads a fixed input: every filter stays
                    changed |= full(n)
                elif m.groups == m.in_channels == m.out_channels:  # depthwise: filter c reads channel c
                    keep[n] |= keep[src]
                    old = keep[src].clone()
                    keep[src] |= keep[n]
                    changed |= not torch.equal(old, keep[src])
                else:
                    changed |= full(n) | full(src)
        changed |= not torch.equal(before, keep[n])
    return changed
