"""Metrics, pure torch/numpy: classification (top-1, error, entropy, per-class accuracy), MAC counts
of a forward pass, mask IoU and COCO-style mask AP, a Fréchet distance between feature sets, and
the statistics every bench shares (confidence intervals, paired differences, noise-floor verdicts).

Import the submodule you need (`methods.metrics.classification`, `.macs`, `.masks`, `.frechet`,
`.stats`); this package imports nothing so that each stays cheap to import.
"""
