"""The paper's architectures by name (``create_model("lenet5")``): LeNets, VGG, ResNets and the registry.

May import: :mod:`relief_nb.common` only (a leaf).
"""

from .zoo import MODELS, create_model, family_of, input_shape_of, list_models

__all__ = ["MODELS", "create_model", "family_of", "input_shape_of", "list_models"]
