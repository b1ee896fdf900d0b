"""Tiny reference models: registry, training scripts, committed weights, real-checkpoint loaders."""
