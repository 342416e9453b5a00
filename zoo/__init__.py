"""Ready models built from keras_attention layers."""
