"""English -> Spanish translation: a Transformer and a GRU + additive-attention baseline."""
