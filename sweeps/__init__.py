"""Entry points a person runs: one file per study, plus benchmarks."""
