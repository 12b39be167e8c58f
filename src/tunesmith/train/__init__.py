"""Training: tokenisation with loss masks, packing, the training loop."""
