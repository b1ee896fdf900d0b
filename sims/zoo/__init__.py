"""Tiny reference models: registry, training scripts, committed weights, real-checkpoint loaders.

Importing this package registers every zoo model in `ZOO` (`sims/zoo/registry.py`): "cnn-bn-digits",
"vit-digits", "digits-classifier", "ddpm-digits" and "sam-shapes". Add a model as one file that
calls `register_zoo(ZooSpec(...))` and import it here.
"""
from sims.zoo import cnn_bn_digits, ddpm_digits, digits_classifier, sam_shapes, vit_digits  # noqa: F401  (register)
from sims.zoo.registry import ZOO, ZooSpec, load_zoo_model, register_zoo

__all__ = ["ZOO", "ZooSpec", "load_zoo_model", "register_zoo"]
