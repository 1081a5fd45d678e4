"""Example models for hookestimator, each a model_fn + input_fn factory."""
