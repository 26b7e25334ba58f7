"""Training engine: the loop, checkpoints, EMA, AMP, non-finite guards."""
