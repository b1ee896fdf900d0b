"""evfarm's simulated worlds and reference zoo: pure, deterministic by seed."""
