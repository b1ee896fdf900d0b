"""Metrics, pure torch/numpy: classification (top-1, error, entropy, per-class accuracy), MAC counts
of a forward pass, mask IoU and COCO-style mask AP, and a Fréchet distance between feature sets.

Import the submodule you need (`methods.metrics.classification`, `.macs`, `.masks`, `.frechet`);
this package imports nothing so that each stays cheap to import.
"""
