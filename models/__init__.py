"""Real models as (model_fn, input_fn) factories, configured with gin."""
import collections

from tensorflow.python.tpu import tpu_function

# What a model factory returns: the model_fn, the input_fns for training
# and held-out evaluation (each `input_fn(params)`), and the model's name.
Model = collections.namedtuple(
    'Model', ['name', 'model_fn', 'train_input_fn', 'eval_input_fn'])


def shard(dataset, params):
  """This worker's share of `dataset` in a cluster: every n-th element
  from its own offset, as params['input_context'] says (the whole dataset
  when there is no cluster)."""
  context = params.get('input_context')
  if context is None or context.num_input_pipelines == 1:
    return dataset
  return dataset.shard(context.num_input_pipelines,
                       context.input_pipeline_id)


def replicated():
  """Whether model_fn is being built as one of several replicas (inside
  TPU's shard context with more than one shard, as hookestimator builds
  each replica), so that its gradients must be summed over them."""
  shards = tpu_function.get_tpu_context().number_of_shards
  return shards is not None and shards > 1
