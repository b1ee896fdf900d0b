"""Data generators: digits, digits-C streams, shapes."""
