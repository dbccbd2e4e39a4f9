"""Every public module class of ``torch.nn`` classified once, by the role it plays for NNrelief, and the functional
and method forms of the same operations. The walk over a traced model (:mod:`relief_nb.graph.trace`) reads this
table; ``docs/supported-layers.md`` is generated from it (``docs/make_supported_layers.py``), and a test fails
on any ``torch.nn`` class a new torch release adds that the table does not classify.

Roles, and what the method needs of each:

* ``weighted sum``: a layer whose output unit is a weighted sum of input signals (Linear, convolutions):
  NNrelief scores and prunes its incoming connections;
* ``normalization``: follows the channels it normalises (a removed unit's channel is masked);
* ``elementwise, f(0) = 0``: units pass through, and a unit with no input emits zero (the dead-unit rule holds);
* ``elementwise, f(0) != 0``: units pass through, but a silent unit emits a constant;
* ``identity in eval``: dropout and ``Identity``: units pass through;
* ``pooling``, ``padding and resizing``: positions move, channels stay;
* ``shape``: positions and units re-indexed; ``channel mixing``: softmax and the like mix units;
* ``attention``, ``recurrent``, ``transformer container``: units mix across positions or time;
* ``container``: traced into; ``loss``, ``distance``: not part of a classifier's forward.

``supported`` says whether the walk follows the class today; otherwise ``note`` says why not, and the walk's
refusal names the class, its role and the note.
"""

from __future__ import annotations

import operator
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ACTIVATION_FUNCTIONS", "ACTIVATION_METHODS", "ACTIVATION_MODULES", "ADD", "ATTENTION_MODULES",
           "CHANNELWISE_MODULES", "LAYER_ROLES", "LayerRole", "MEAN", "METADATA", "MUL", "OFFSET_FUNCTIONS",
           "OFFSET_METHODS", "OFFSET_MODULES", "POOL_FUNCTIONS", "POOL_MODULES", "RESHAPE",
           "RESIZE_FUNCTIONS", "RESIZE_MODULES", "TRANSPOSE", "acts_as_torch_layer", "declare_layer",
           "declared_role", "markdown", "refusal",
           "role_of"]


class LayerRole(NamedTuple):
    role: str
    supported: bool
    note: str = ""


def _roles(role: str, supported: bool, note: str, *names: str) -> dict[str, LayerRole]:
    return {name: LayerRole(role, supported, note) for name in names}


_TABLE: dict[str, LayerRole] = {
    **_roles("weighted sum", True, "units: output features", "Linear"),
    **_roles("weighted sum", True, "units: output channels; any padding mode, grouped and depthwise", "Conv1d",
             "Conv2d", "Conv3d"),
    **_roles("weighted sum", True, "units: output channels; the weight's in/out axes swapped (groups=1 only)",
             "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"),
    **_roles("weighted sum", False, "not materialised: run one forward first (it then becomes its non-lazy class)",
             "LazyLinear", "LazyConv1d", "LazyConv2d", "LazyConv3d", "LazyConvTranspose1d", "LazyConvTranspose2d",
             "LazyConvTranspose3d", "LazyBatchNorm1d", "LazyBatchNorm2d", "LazyBatchNorm3d", "LazyInstanceNorm1d",
             "LazyInstanceNorm2d", "LazyInstanceNorm3d"),
    **_roles("weighted sum", False, "two inputs: a bilinear form has no single input signal per connection",
             "Bilinear"),
    **_roles("weighted sum", True, "an input table read by token ids (a Linear over one-hot ids); units: its "
             "embedding dims", "Embedding"),
    **_roles("weighted sum", False, "sums bags of embeddings with per-sample offsets: not followed yet (ignore= it)",
             "EmbeddingBag"),
    **_roles("normalization", True, "follows its channels (folded into the layer it reads directly)",
             "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm"),
    **_roles("normalization", True, "follows its channels (statistics per sample and channel; sliced, not folded)",
             "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d"),
    **_roles("normalization", True, "statistics shared by a group of channels: its channels count as merged; the "
             "export removes whole groups only", "GroupNorm"),
    **_roles("normalization", True, "over the unit axis only; its channels count as merged (shared statistics)",
             "LayerNorm"),
    **_roles("normalization", False, "planned: like LayerNorm over the unit axis", "RMSNorm"),
    **_roles("channel mixing", False, "normalises each channel by its neighbours: mixes units", "LocalResponseNorm",
             "CrossMapLRN2d"),
    **_roles("elementwise, f(0) = 0", True, "units pass through; a unit with no input emits zero",
             "ReLU", "ReLU6", "LeakyReLU", "GELU", "SiLU", "Tanh", "Hardswish", "ELU", "CELU", "SELU", "Mish",
             "Hardtanh", "Hardshrink", "Softshrink", "Softsign", "Tanhshrink", "RReLU"),
    **_roles("elementwise, f(0) = 0", True, "its per-channel slope follows the channels", "PReLU"),
    **_roles("elementwise, f(0) != 0", True, "a removed unit emits f(0): its channel counts as merged (no dead-unit "
             "rule), a layer reading it keeps every channel it reads at export, a product with it is a gate",
             "Sigmoid", "Hardsigmoid", "LogSigmoid", "Softplus"),
    **_roles("elementwise, f(0) != 0", False, "its value at 0 depends on its threshold: not followed yet",
             "Threshold"),
    **_roles("channel mixing", False, "mixes the units it normalises over", "Softmax", "Softmin", "LogSoftmax",
             "Softmax2d"),
    **_roles("channel mixing", False, "splits the channels in two halves that gate each other", "GLU"),
    **_roles("identity in eval", True, "the identity in eval mode (training behaviour untouched)", "Identity",
             "Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout", "FeatureAlphaDropout"),
    **_roles("pooling", True, "over positions, per channel", "MaxPool1d", "MaxPool2d", "MaxPool3d", "AvgPool1d",
             "AvgPool2d", "AvgPool3d", "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d",
             "AdaptiveMaxPool1d", "AdaptiveMaxPool2d", "AdaptiveMaxPool3d", "LPPool1d", "LPPool2d", "LPPool3d",
             "FractionalMaxPool2d", "FractionalMaxPool3d"),
    **_roles("pooling", False, "needs the indices of a pooling as a second input", "MaxUnpool1d", "MaxUnpool2d",
             "MaxUnpool3d"),
    **_roles("padding and resizing", True, "positions only, channels stay (a zero channel stays zero)", "ZeroPad1d",
             "ZeroPad2d", "ZeroPad3d", "ReflectionPad1d", "ReflectionPad2d", "ReflectionPad3d", "ReplicationPad1d",
             "ReplicationPad2d", "ReplicationPad3d", "CircularPad1d", "CircularPad2d", "CircularPad3d", "Upsample",
             "UpsamplingNearest2d", "UpsamplingBilinear2d"),
    **_roles("padding and resizing", True, "positions only; a value other than 0 makes a silent unit emit it at the "
             "borders (refused then)", "ConstantPad1d", "ConstantPad2d", "ConstantPad3d"),
    **_roles("shape", True, "positions and units re-indexed", "Flatten"),
    **_roles("shape", False, "planned: the inverse of a flatten", "Unflatten"),
    **_roles("shape", True, "a permutation of channels, followed unit by unit", "ChannelShuffle"),
    **_roles("shape", False, "moves channels into positions (or back): not followed yet", "PixelShuffle",
             "PixelUnshuffle"),
    **_roles("shape", False, "moves positions into channels (or back): units mix with positions", "Fold",
             "Unfold"),
    **_roles("attention", True, "kept whole, and listed in the pass's report: every output mixes all positions and "
             "heads (per-head pruning is not done yet)", "MultiheadAttention"),
    **_roles("recurrent", True, "kept whole, and listed in the pass's report: recurrent weights feed every unit "
             "back into itself over time", "RNN", "LSTM", "GRU", "RNNBase"),
    **_roles("recurrent", False, "a cell is called once per time step: shared weights (ignore= it)", "RNNCell",
             "LSTMCell", "GRUCell", "RNNCellBase"),
    **_roles("transformer container", True, "kept whole, and listed in the pass's report: attention inside fused "
             "fast paths", "Transformer", "TransformerEncoder", "TransformerDecoder", "TransformerEncoderLayer",
             "TransformerDecoderLayer"),
    **_roles("container", True, "traced into", "Module", "Sequential", "ModuleList", "ModuleDict",
             "ParameterList", "ParameterDict", "Container"),
    **_roles("container", False, "unwrap it (model.module) before pruning", "DataParallel"),
    **_roles("distance", False, "reduces over the unit axis", "CosineSimilarity", "PairwiseDistance"),
    **_roles("loss", False, "a loss, not part of the model's forward", "AdaptiveLogSoftmaxWithLoss", "BCELoss",
             "BCEWithLogitsLoss", "CTCLoss", "CosineEmbeddingLoss", "CrossEntropyLoss", "GaussianNLLLoss",
             "HingeEmbeddingLoss", "HuberLoss", "KLDivLoss", "L1Loss", "LinearCrossEntropyLoss", "MSELoss",
             "MarginRankingLoss", "MultiLabelMarginLoss", "MultiLabelSoftMarginLoss", "MultiMarginLoss", "NLLLoss",
             "NLLLoss2d", "PoissonNLLLoss", "SmoothL1Loss", "SoftMarginLoss", "TripletMarginLoss",
             "TripletMarginWithDistanceLoss"),
}
# classes this torch has (a name of another release is simply absent)
LAYER_ROLES: dict[type, LayerRole] = {getattr(nn, name): role for name, role in _TABLE.items() if hasattr(nn, name)}


def role_of(module_type: type) -> LayerRole | None:
    """The role of a torch.nn class, or of the nearest torch.nn class it derives from (None: not torch.nn's)."""
    for klass in module_type.__mro__:
        if klass in LAYER_ROLES:
            return LAYER_ROLES[klass]
    return None


DECLARED_ROLES = ("linear", "conv", "batchnorm", "layernorm", "identity")
_DECLARED: dict[type, str] = {}


def declare_layer(cls: type, computes: str) -> None:
    """Declare what modules of ``cls`` compute, so the graph treats them as that layer instead of tracing into them:

    * ``"linear"`` / ``"conv"``: a subclass of ``nn.Linear`` / a torch convolution with its weight layout whose
      ``forward`` differs only in ways that do not change the weighted sum (a dtype cast, a hook);
    * ``"batchnorm"``: a per-channel normalisation with BatchNorm's parameters and statistics, possibly followed by
      an activation with f(0) = 0 (timm's ``BatchNormAct2d``): channels follow it, sliced at export, never folded;
    * ``"layernorm"``: a normalisation over the unit axis (a ``LayerNorm2d`` over dim 1): channels merged, kept;
    * ``"identity"``: the identity in eval mode (``DropPath``).

    Example: ``relief_nb.declare_layer(timm.layers.BatchNormAct2d, "batchnorm")``."""
    if computes not in DECLARED_ROLES:
        raise ValueError(f"computes must be one of {', '.join(DECLARED_ROLES)}, got {computes!r}")
    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        raise TypeError(f"declare_layer takes a torch.nn.Module class, got {cls!r}")
    base = {"linear": nn.Linear, "conv": nn.modules.conv._ConvNd}.get(computes)
    if base is not None and not issubclass(cls, base):
        raise ValueError(f"{cls.__name__} computes {computes!r} only as a subclass of {base.__name__} (its weight "
                         "layout is how NNrelief reads its connections)")
    _DECLARED[cls] = computes


def declared_role(module: nn.Module) -> str | None:
    """What ``declare_layer`` says ``module``'s class (or a base of it) computes, or None."""
    return next((_DECLARED[k] for k in type(module).__mro__ if k in _DECLARED), None)


def acts_as_torch_layer(module: nn.Module) -> bool:
    """A subclass of a torch.nn layer whose ``forward`` is the base class's computes what that layer computes
    (``class MyLinear(nn.Linear): pass``, a library's ``Linear`` with extra attributes): it is that layer."""
    base = next((k for k in type(module).__mro__ if k in LAYER_ROLES), None)
    if base is None or base is type(module) or LAYER_ROLES[base].role == "container":
        return False
    return type(module).forward is base.forward


def refusal(module: nn.Module) -> str:
    """Why the walk cannot follow ``module``, from its role."""
    role = role_of(type(module))
    if role is None:
        return f"{type(module).__name__} is not a torch.nn layer NNrelief knows"
    return f"{type(module).__name__} ({role.role}) is not followed yet: {role.note}"


def _supported(*roles: str) -> tuple[type, ...]:
    return tuple(k for k, r in LAYER_ROLES.items() if r.supported and r.role in roles)


ACTIVATION_MODULES = tuple(k for k in _supported("elementwise, f(0) = 0", "identity in eval") if k is not nn.PReLU)
POOL_MODULES = _supported("pooling")
RESIZE_MODULES = _supported("padding and resizing")
# read whole and kept whole, with the reason in the pass's report (recurrent layers too: nn.RNNBase)
ATTENTION_MODULES = _supported("attention", "transformer container")
OFFSET_MODULES = _supported("elementwise, f(0) != 0")
OFFSET_FUNCTIONS = {torch.sigmoid, F.sigmoid, F.hardsigmoid, F.logsigmoid, F.softplus}
OFFSET_METHODS = {"sigmoid", "sigmoid_"}
# layers that keep their channels apart and whose parameters (if any) are per channel: on a fixed input they are
# simply part of the fixed signal
CHANNELWISE_MODULES = (*ACTIVATION_MODULES, *POOL_MODULES, *RESIZE_MODULES, nn.PReLU, nn.GroupNorm,
                       nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
# the same operations as functions and tensor methods
ACTIVATION_FUNCTIONS = {F.relu, torch.relu, F.relu6, F.leaky_relu, F.gelu, F.silu, torch.tanh, F.tanh,
                        F.hardswish, F.elu, F.celu, torch.celu, F.selu, torch.selu, F.mish, F.hardtanh, F.hardshrink,
                        F.softshrink, F.softsign, F.tanhshrink, F.dropout, F.dropout1d, F.dropout2d, F.dropout3d,
                        F.alpha_dropout, F.feature_alpha_dropout, torch.clone}
ACTIVATION_METHODS = {"relu", "relu_", "tanh", "contiguous", "clone", "float", "to", "detach"}
RESIZE_FUNCTIONS = {F.interpolate, F.upsample}
POOL_FUNCTIONS = {F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
                  F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, F.adaptive_max_pool1d,
                  F.adaptive_max_pool2d, F.adaptive_max_pool3d, F.lp_pool1d, F.lp_pool2d}
RESHAPE = {torch.flatten, "flatten", "view", "reshape"}
TRANSPOSE = {"transpose", torch.transpose, "permute", torch.permute}
ADD = {operator.add, operator.iadd, torch.add, "add", "add_"}
MUL = {operator.mul, torch.mul, "mul"}
METADATA = {"size", "dim", "shape", "dtype", "device", "ndim", "numel"}
MEAN = {torch.mean, "mean", torch.sum, "sum", torch.amax, "amax"}


def markdown() -> str:
    """``docs/supported-layers.md``: every classified torch.nn class, by role."""
    lines = ["# Supported layers", "",
             "Generated from `relief_nb/graph/taxonomy.py` (`python docs/make_supported_layers.py`); a test keeps it "
             "in step. Every public module class of `torch.nn` "
             "is classified by the role it plays for NNrelief. A class marked *no* is refused by the pass with an "
             "error that names it, its role and the reason; pass the path of the module holding it in `ignore=` to "
             "leave that part dense. Subclasses of a class have its role (e.g. `class MyLinear(nn.Linear)`).", "",
             "| class | role | supported | note |", "|---|---|---|---|"]
    for klass, role in sorted(LAYER_ROLES.items(), key=lambda kv: (kv[1].role, kv[0].__name__)):
        lines.append(f"| `nn.{klass.__name__}` | {role.role} | {'yes' if role.supported else 'no'} | {role.note} |")
    return "\n".join(lines) + "\n"

