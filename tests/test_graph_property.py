"""Property: random small graphs built from supported pieces never break "a removed unit is read by nobody and
reads nothing", and export equals the masked model."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_graph import check_consistent
from torch import nn

from relief_nb.graph.export import export_pruned
from relief_nb.pruning.relief import ReliefConfig, relief_prune

ACTS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh, "relu6": nn.ReLU6}


class Piece(nn.Module):
    """One stage: ``conv``, ``dw`` (depthwise), ``res`` (identity residual), ``proj`` (projection residual),
    ``cat`` (two parallel convs concatenated)."""

    def __init__(self, kind: str, cin: int, cout: int, act: str, bn: bool) -> None:
        super().__init__()
        self.kind = kind
        self.act = ACTS[act]()

        def norm(c: int) -> nn.Module:
            return nn.BatchNorm2d(c) if bn else nn.Identity()
        if kind == "conv":
            self.a, self.na = nn.Conv2d(cin, cout, 3, padding=1), norm(cout)
        elif kind == "dw":
            self.a, self.na = nn.Conv2d(cin, cin, 3, padding=1, groups=cin), norm(cin)
        elif kind in ("res", "proj"):
            self.a, self.na = nn.Conv2d(cin, cout, 3, padding=1), norm(cout)
            self.b, self.nb = nn.Conv2d(cout, cout, 3, padding=1), norm(cout)
            if kind == "proj":
                self.p, self.np = nn.Conv2d(cin, cout, 1), norm(cout)
        else:  # cat
            self.a, self.na = nn.Conv2d(cin, cout // 2, 3, padding=1), norm(cout // 2)
            self.b, self.nb = nn.Conv2d(cin, cout - cout // 2, 1), norm(cout - cout // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind in ("conv", "dw"):
            return self.act(self.na(self.a(x)))
        if self.kind == "cat":
            return torch.cat([self.act(self.na(self.a(x))), self.act(self.nb(self.b(x)))], dim=1)
        out = self.nb(self.b(self.act(self.na(self.a(x)))))
        short = self.np(self.p(x)) if self.kind == "proj" else x
        return self.act(out + short)


class RandomNet(nn.Module):
    def __init__(self, pieces: list[tuple[str, int, str, bool]], head: int, flatten: bool) -> None:
        super().__init__()
        stages, c = [], 3
        for kind, width, act, bn in pieces:
            cout = c if kind in ("res", "dw") else width
            stages.append(Piece(kind, c, cout, act, bn))
            c = cout
        self.stages = nn.Sequential(*stages)
        self.flatten = flatten
        self.fc1 = nn.Linear(c * (4 if flatten else 1), head)
        self.fc2 = nn.Linear(head, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(x)
        x = torch.flatten(nn.functional.max_pool2d(x, 2), 1) if self.flatten else x.mean((2, 3))
        return self.fc2(torch.relu(self.fc1(x)))


piece = st.tuples(st.sampled_from(["conv", "dw", "res", "proj", "cat"]), st.integers(2, 6),
                  st.sampled_from(sorted(ACTS)), st.booleans())


@settings(max_examples=20, deadline=None)
@given(pieces=st.lists(piece, min_size=1, max_size=4), head=st.integers(2, 6), flatten=st.booleans(),
       alpha_conv=st.floats(0.3, 1.0), alpha_fc=st.floats(0.3, 1.0), seed=st.integers(0, 2**16),
       drop=st.floats(0.0, 0.6), dead=st.booleans(), residual=st.booleans())
def test_removed_units_are_read_by_nobody(pieces, head, flatten, alpha_conv, alpha_fc, seed, drop, dead, residual):
    torch.manual_seed(seed)
    model = RandomNet(pieces, head, flatten).eval()
    with torch.no_grad():  # silence random kernels so that units and channels are removed
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.mul_((torch.rand(m.weight.shape[:2]) >= drop).view(*m.weight.shape[:2],
                                                                            *[1] * (m.weight.ndim - 2)))
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.bias.uniform_(-0.5, 0.5)
    x = torch.rand(8, 3, 4, 4)
    config = ReliefConfig(alpha_conv, alpha_fc, dead_units=dead, residual_rule=residual)
    graph = relief_prune(model, x, config)
    graph = relief_prune(model, x, config)
    check_consistent(model, graph)
    assert torch.isfinite(model(x)).all()
    export_pruned(model, (3, 4, 4), graph=graph, probe=x)  # raises unless it equals the masked model
