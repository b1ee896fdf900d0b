"""Tiny reference models: registry, training scripts, committed weights, real-checkpoint loaders.

Importing this package registers every zoo model in `ZOO` (`sims/zoo/registry.py`): "cnn-bn-digits",
"vit-digits", "digits-classifier", "ddpm-digits", the 32×32 colour diffusion bed
"ddpm-scenes" with its FD model "scenes-classifier", "sam-shapes", the textures-10 beds
"cnn-bn-textures", "vit-textures" and "vit-textures-outliers" (its float-equivalent variant with
post-LayerNorm outlier channels), "search-segmenter" (the search rig's panorama segmenter), and
the event-segmentation models of `sltnet_events`.
Add a model as one file that calls `register_zoo(ZooSpec(...))` and import it here.
"""
from sims.zoo import (  # noqa: F401  (register)
    cnn_bn_digits,
    cnn_bn_textures,
    ddpm_digits,
    ddpm_scenes,
    digits_classifier,
    sam_shapes,
    scenes_classifier,
    search_segmenter,
    sltnet_events,
    vit_digits,
    vit_textures,
    vit_textures_outliers,
)
from sims.zoo.registry import ZOO, ZooSpec, load_zoo_model, register_zoo

__all__ = ["ZOO", "ZooSpec", "load_zoo_model", "register_zoo"]
