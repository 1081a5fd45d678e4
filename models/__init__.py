"""Real models as (model_fn, input_fn) factories, configured with gin."""
import collections

# What a model factory returns: the model_fn, the input_fns for training
# and held-out evaluation (each `input_fn(params)`), and the model's name.
Model = collections.namedtuple(
    'Model', ['name', 'model_fn', 'train_input_fn', 'eval_input_fn'])
