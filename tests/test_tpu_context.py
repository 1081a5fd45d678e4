"""params['context'] and per-core input, as TPUEstimator gives them to a
program with use_tpu=True: here its replicas run off a TPU.

- With per_host_input_for_training=False (PER_SHARD_V1), training calls
  input_fn once per core, each call with its own pipeline, so every core
  reads the input from its start.
- input_fn and model_fn find a TPUContext in params['context'] (not with
  use_tpu=False, as TPUEstimator's CPU path gives none).
"""
import numpy as np
import pytest
import tensorflow as tf

from hookestimator import tpu

v1 = tf.compat.v1
SHARDS = 2
HOST = '/device:CPU:0'


def _input_fn(deployments=None, as_tensors=False):
  """x rows 0..15 (each row different) and y = x0 + x1, in batches of
  params['batch_size'], as a Dataset or as tensors from its iterator."""
  def input_fn(params):
    context = params.get('context')
    if deployments is not None:
      deployments.append(context and context.current_input_fn_deployment())
    x = np.arange(32, dtype=np.float32).reshape(16, 2) / 32.
    y = x.sum(axis=1, keepdims=True)
    dataset = tf.data.Dataset.from_tensor_slices(({'x': x}, y)).repeat(
    ).batch(params['batch_size'], drop_remainder=True)
    if as_tensors:
      return v1.data.make_one_shot_iterator(dataset).get_next()
    return dataset
  return input_fn


def _model_fn(contexts=None):
  """A public program's linear model: a default-named scope, the
  optimizer wrapped in CrossShardOptimizer when params['use_tpu']."""
  def model_fn(features, labels, mode, params):
    if contexts is not None:
      contexts[mode] = params.get('context')
    with v1.variable_scope(None, default_name='dense'):
      kernel = v1.get_variable('kernel', [2, 1],
                               initializer=v1.zeros_initializer())
    predictions = tf.matmul(features['x'], kernel)
    if mode == tpu.ModeKeys.PREDICT:
      return tpu.TPUEstimatorSpec(mode, predictions={'y': predictions})
    loss = v1.losses.mean_squared_error(labels, predictions)
    optimizer = v1.train.GradientDescentOptimizer(0.5)
    if params['use_tpu']:
      optimizer = tpu.CrossShardOptimizer(optimizer)
    return tpu.TPUEstimatorSpec(
        mode, loss=loss,
        train_op=optimizer.minimize(loss, v1.train.get_global_step()))
  return model_fn


def _estimator(model_dir, use_tpu, batch, per_host=True, contexts=None):
  return tpu.TPUEstimator(
      model_fn=_model_fn(contexts), use_tpu=use_tpu,
      config=tpu.RunConfig(model_dir=str(model_dir), tpu_config=tpu.TPUConfig(
          iterations_per_loop=3, num_shards=SHARDS,
          per_host_input_for_training=per_host)),
      train_batch_size=batch, eval_batch_size=batch, predict_batch_size=batch)


def _kernel(estimator):
  return estimator.get_variable_value('dense/kernel')


@pytest.mark.timeout(300)
@pytest.mark.parametrize('as_tensors', [True, False])
def test_per_core_input_calls_input_fn_once_per_core(tmp_path, as_tensors):
  # Each core reads its own pipeline from the start, so both read the same
  # batches: the mean of their gradients is one core's, and the run trains
  # as one replica reading batches of the core batch.
  deployments = []
  per_core = _estimator(tmp_path / 'per_core', True, 4, per_host=False)
  per_core.train(_input_fn(deployments, as_tensors), max_steps=7)
  assert deployments == [(HOST, index, SHARDS, 1) for index in range(SHARDS)]
  alone = _estimator(tmp_path / 'alone', False, 2)
  alone.train(_input_fn(as_tensors=as_tensors), max_steps=7)
  np.testing.assert_allclose(_kernel(per_core), _kernel(alone), atol=1e-6)
  # Per host, the two cores read different batches: another result.
  per_host = _estimator(tmp_path / 'per_host', True, 4,
                        per_host=tpu.InputPipelineConfig.PER_HOST_V2)
  per_host.train(_input_fn(), max_steps=7)
  assert np.abs(_kernel(per_host) - _kernel(alone)).max() > 1e-3


@pytest.mark.timeout(300)
def test_input_fn_and_model_fn_get_a_tpu_context_with_use_tpu(tmp_path):
  deployments, contexts = [], {}
  estimator = _estimator(tmp_path, True, 4, contexts=contexts)
  estimator.train(_input_fn(deployments), max_steps=2)
  estimator.evaluate(_input_fn(deployments), steps=1)
  predictions = estimator.predict(
      lambda params: _input_fn(deployments)(params).take(1))
  assert len(list(predictions)) == 4
  # One call per host (one host here), feeding both cores, in each mode.
  assert deployments == [(HOST, 0, 1, SHARDS)] * 3
  for mode in (tpu.ModeKeys.TRAIN, tpu.ModeKeys.EVAL, tpu.ModeKeys.PREDICT):
    context = contexts[mode]
    assert (context.num_replicas, context.num_hosts,
            context.num_of_replicas_per_host) == (SHARDS, 1, SHARDS)
    assert context.device_assignment is None
    assert context.device_for_replica(1) == (HOST, 1)
    assert context.tpu_host_placement_function(host_id=0) == HOST
    with pytest.raises(RuntimeError, match='must not be called from'):
      context.current_input_fn_deployment()
    with pytest.raises(RuntimeError, match='must not be called from'):
      context.current_host


@pytest.mark.timeout(300)
def test_no_context_with_use_tpu_false(tmp_path):
  # TPUEstimator's CPU path gives neither function a context.
  deployments, contexts = [], {}
  estimator = _estimator(tmp_path, False, 4, contexts=contexts)
  estimator.train(_input_fn(deployments), max_steps=1)
  estimator.evaluate(_input_fn(deployments), steps=1)
  assert deployments == [None, None]
  assert contexts == {tpu.ModeKeys.TRAIN: None, tpu.ModeKeys.EVAL: None}
