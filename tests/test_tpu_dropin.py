"""hookestimator.tpu: code written for tf.compat.v1.estimator.tpu runs with
only its import line changed, and gives what TPUEstimator gives."""
import logging
import os
import types

import numpy as np
import pytest
import tensorflow as tf

import hookestimator as he
from hookestimator import compat
from hookestimator import tpu
from tests import inference_models as models
from tests.conftest import framework_threads
from tests.conftest import requires_estimator

v1 = tf.compat.v1
ORIGINAL_IMPORT = 'from tensorflow.compat.v1.estimator import tpu'
DROP_IN_IMPORT = 'from hookestimator import tpu'
MODEL_SOURCE = os.path.join(os.path.dirname(__file__), 'tpu_style_mnist.py')


def _load(source, name):
  module = types.ModuleType(name)
  exec(compile(source, MODEL_SOURCE, 'exec'), module.__dict__)
  return module


def _sources():
  with open(MODEL_SOURCE) as f:
    original = f.read()
  return original, original.replace(ORIGINAL_IMPORT, DROP_IN_IMPORT)


# Where tensorflow-estimator is gone (TF >= 2.16), tf.estimator itself is
# gone too: a program's tf.estimator names come from hookestimator.tpu.
NO_ESTIMATOR_EDIT = ('tf.estimator.', 'tpu.')


@pytest.fixture(scope='module')
def example_modules():
  original, changed = _sources()
  differing = [(a, b) for a, b in zip(original.splitlines(),
                                      changed.splitlines()) if a != b]
  assert differing == [(ORIGINAL_IMPORT, DROP_IN_IMPORT)]
  return _load(original, 'tpu_style_mnist'), _load(changed, 'drop_in_mnist')


@pytest.mark.skipif(compat.ESTIMATOR is not None,
                    reason='this line has tf.estimator: the test above '
                    'runs the program with only its import changed')
def test_tpu_estimator_example_runs_without_tf_estimator(tmp_path):
  _, changed = _sources()
  drop_in = _load(changed.replace(*NO_ESTIMATOR_EDIT), 'drop_in_mnist')
  results, predictions = drop_in.run(str(tmp_path), use_tpu=True,
                                     train_steps=12)
  assert results['global_step'] == 12
  assert results['accuracy'] > 0.5
  assert len(predictions) == 10
  assert framework_threads() == []


@requires_estimator
def test_tpu_estimator_example_runs_with_only_the_import_changed(
    example_modules, tmp_path, caplog):
  original, drop_in = example_modules
  assert drop_in.tpu is tpu
  # TensorFlow's TPUEstimator, on the CPU of this machine, one replica.
  expected, expected_predictions = original.run(str(tmp_path / 'tf'),
                                                use_tpu=False, train_steps=12)
  # hookestimator: use_tpu=True with no TPU runs num_shards=8 replicas on
  # this machine's CPU devices, CrossShardOptimizer summing over them; the
  # global batch is the same, so is the training.
  with caplog.at_level(logging.INFO, logger='hookestimator.tpu'):
    results, predictions = drop_in.run(str(tmp_path / 'he'), use_tpu=True,
                                       train_steps=12)
  assert ('TPUEstimator(use_tpu=True) runs on %s with 8 replicas' %
          tpu.choose_device(True)) in caplog.text
  assert results['global_step'] == expected['global_step'] == 12
  assert results['accuracy'] == pytest.approx(expected['accuracy'])
  assert results['loss'] == pytest.approx(expected['loss'], rel=1e-4)
  # Ten predictions from a batch of 16: padded on the host, sliced back.
  assert len(predictions) == len(expected_predictions) == 10
  assert ([p['class_ids'] for p in predictions] ==
          [p['class_ids'] for p in expected_predictions])
  np.testing.assert_allclose(
      np.stack([p['probabilities'] for p in predictions]),
      np.stack([p['probabilities'] for p in expected_predictions]),
      rtol=1e-4, atol=1e-6)
  assert framework_threads() == []


def _linear(features, labels, mode, params):
  """A model that records what it sees in params."""
  _linear.seen[mode] = dict(params)
  return models.model_fn(features, labels, mode, params)


_linear.seen = {}


def _estimator(tmp_path, **kwargs):
  config = tpu.RunConfig(model_dir=str(tmp_path / 'model'),
                         save_checkpoints_steps=100,
                         tpu_config=tpu.TPUConfig(iterations_per_loop=3))
  kwargs.setdefault('train_batch_size', 8)
  return tpu.TPUEstimator(model_fn=_linear, config=config, **kwargs)


# Where use_tpu runs without a TPU: this machine's GPU if it has one.
OFF_TPU_DEVICE = 'gpu' if compat.physical_devices('GPU') else 'cpu'


def _without_a_tpu(monkeypatch):
  real = compat.physical_devices
  monkeypatch.setattr(compat, 'physical_devices', lambda kind: (
      [] if kind == 'TPU' else real(kind)))


def test_params_batch_sizes_and_the_logged_device(tmp_path, caplog,
                                                  monkeypatch):
  _without_a_tpu(monkeypatch)
  with caplog.at_level(logging.INFO, logger='hookestimator.tpu'):
    est = _estimator(tmp_path, params={'learning_rate': 0.1},
                     eval_batch_size=4, predict_batch_size=2)
  assert [r.getMessage() for r in caplog.records] == [
      'TPUEstimator(use_tpu=True) runs on %s' % OFF_TPU_DEVICE]
  assert est.config.tpu_config.iterations_per_loop == 3
  est.train(models.train_input_fn, max_steps=3)
  est.evaluate(lambda params: models.dataset(6, params['batch_size']))
  assert len(list(est.predict(lambda params: models.dataset(
      5, params['batch_size'], labels=False)))) == 5
  assert _linear.seen['train'] == {'learning_rate': 0.1, 'batch_size': 8,
                                   'use_tpu': False}
  assert _linear.seen['eval']['batch_size'] == 4
  assert _linear.seen['infer']['batch_size'] == 2


def test_choose_device():
  def machine(*kinds):
    return lambda kind: ['/device:%s:0' % kind] if kind in kinds else []
  assert tpu.choose_device(True, machine('CPU', 'GPU', 'TPU')) == 'tpu'
  assert tpu.choose_device(True, machine('CPU', 'GPU')) == 'gpu'
  assert tpu.choose_device(True, machine('CPU')) == 'cpu'
  assert tpu.choose_device(False, machine('CPU', 'GPU', 'TPU')) == 'gpu'
  assert tpu.choose_device(False, machine('CPU')) == 'cpu'


def _with_a_tpu(monkeypatch):
  real = compat.physical_devices
  monkeypatch.setattr(compat, 'physical_devices', lambda kind: (
      ['/physical_device:TPU:0'] if kind == 'TPU' else real(kind)))


def test_several_tpu_cores_are_refused_on_a_tpu(tmp_path, monkeypatch):
  config = tpu.RunConfig(model_dir=str(tmp_path),
                         tpu_config=tpu.TPUConfig(10, num_shards=8))
  _without_a_tpu(monkeypatch)
  # No TPU here: the loop runs on this machine's GPU or CPU.
  assert tpu.TPUEstimator(_linear, config=config,
                          train_batch_size=8).config.device == OFF_TPU_DEVICE
  _with_a_tpu(monkeypatch)
  with pytest.raises(ValueError, match='num_shards=8 cannot be honoured'):
    tpu.TPUEstimator(_linear, config=config, train_batch_size=8)
  assert tpu.TPUEstimator(_linear, config=config, train_batch_size=8,
                          use_tpu=False).config.device == OFF_TPU_DEVICE


def test_eval_on_tpu_false_evaluates_off_the_tpu(tmp_path, monkeypatch):
  _estimator(tmp_path, use_tpu=False).train(models.train_input_fn, steps=2)
  _with_a_tpu(monkeypatch)
  est = _estimator(tmp_path, eval_on_tpu=False)
  assert est.config.device == 'tpu'
  results = est.evaluate(lambda params: models.dataset(6, 8))
  assert results['global_step'] == 2
  assert _linear.seen['eval']['use_tpu'] is False


def test_warm_start_from_another_model(tmp_path):
  donor = _estimator(tmp_path / 'donor', params={'learning_rate': 0.5})
  donor.train(models.train_input_fn, steps=6)
  warm = _estimator(tmp_path / 'warm', params={'learning_rate': 0.0},
                    warm_start_from=donor.model_dir)
  warm.train(models.train_input_fn, steps=1)
  np.testing.assert_array_equal(warm.get_variable_value('w'),
                                donor.get_variable_value('w'))
  assert warm.get_variable_value('global_step') == 1
  # Resuming reads the model's own checkpoint, not the donor.
  warm.train(models.train_input_fn, steps=1)
  assert warm.get_variable_value('global_step') == 2


def test_tf_random_seed_makes_initialisation_repeatable(tmp_path):
  def random_model(features, labels, mode, params):
    spec = models.model_fn(features, labels, mode, params)
    noise = v1.get_variable('noise', [3],
                            initializer=v1.random_normal_initializer())
    return spec._replace(loss=spec.loss + 0 * tf.reduce_sum(noise))
  values = []
  for index, seed in enumerate([5, 5, 6]):
    config = tpu.RunConfig(model_dir=str(tmp_path / str(index)),
                           tf_random_seed=seed)
    est = tpu.TPUEstimator(random_model, config=config, train_batch_size=8)
    est.train(models.train_input_fn, steps=1)
    values.append(est.get_variable_value('noise'))
  np.testing.assert_array_equal(values[0], values[1])
  assert not np.array_equal(values[0], values[2])


def test_spec_takes_tpu_estimator_spec_arguments_in_order():
  with tf.Graph().as_default():
    loss = tf.constant(1.0)
    predictions = {'p': tf.zeros([2, 1])}
    spec = tpu.TPUEstimatorSpec('infer', predictions, loss)
  assert isinstance(spec, he.HookEstimatorSpec)
  assert spec.predictions is predictions and spec.loss is loss


@pytest.mark.parametrize('make,match', [
    (lambda: tpu.RunConfig(train_distribute='mirrored'),
     'train_distribute=.*cannot be honoured'),
    (lambda: tpu.RunConfig(device_fn=lambda op: ''), 'device_fn'),
    (lambda: tpu.RunConfig(keep_checkpoint_every_n_hours=1),
     'keep_checkpoint_every_n_hours=1'),
    (lambda: tpu.RunConfig(save_checkpoints_steps=5,
                           save_checkpoints_secs=5), 'not both'),
    (lambda: tpu.TPUConfig(experimental_host_call_every_n_steps=10),
     'experimental_host_call_every_n_steps=10'),
    (lambda: tpu.TPUConfig(iterations_per_loop=0), 'iterations_per_loop.*0'),
    (lambda: tpu.TPUEstimator(_linear, embedding_config_spec=object()),
     'embedding_config_spec'),
    (lambda: tpu.TPUEstimator(_linear, export_to_cpu=False),
     'export_to_cpu=False'),
    (lambda: tpu.TPUEstimator(_linear, params={'context': 1}),
     "'context'.*are reserved keys"),
    (lambda: tpu.TPUEstimator(_linear, train_batch_size=0),
     'train_batch_size.*0'),
    (lambda: tpu.TPUEstimator(_linear, warm_start_from=3),
     'warm_start_from must be'),
    (lambda: tpu.TPUEstimator(_linear, model_dir='/a', config=tpu.RunConfig(
        model_dir='/b')), "model_dir='/a' differs"),
])
def test_arguments_that_cannot_be_honoured_are_refused(make, match):
  with pytest.raises((ValueError, TypeError), match=match):
    make()


def test_arguments_without_meaning_here_are_accepted(tmp_path):
  config = tpu.RunConfig(
      tpu_config=tpu.TPUConfig(
          iterations_per_loop=2,
          per_host_input_for_training=tpu.InputPipelineConfig.PER_HOST_V2,
          tpu_job_name='worker', initial_infeed_sleep_secs=1),
      master='grpc://10.0.0.1:8470', evaluation_master='', cluster=None,
      model_dir=str(tmp_path), save_summary_steps=10, protocol='grpc',
      session_creation_timeout_secs=60)
  est = tpu.TPUEstimator(_linear, config=config, train_batch_size=8,
                         batch_axis=(0, 0), export_to_tpu=True)
  est.train(models.train_input_fn, steps=2)
  assert est.get_variable_value('global_step') == 2


@pytest.mark.parametrize('call,match', [
    (lambda est: est.train(models.train_input_fn, steps=1,
                           saving_listeners=[object()]), 'saving_listeners'),
    (lambda est: est.export_saved_model('/tmp/x', lambda: None,
                                        experimental_mode='train'),
     "experimental_mode='train'"),
])
def test_method_arguments_that_cannot_be_honoured(tmp_path, call, match):
  with pytest.raises(ValueError, match=match):
    call(_estimator(tmp_path))


def test_a_missing_batch_size_is_named_when_needed(tmp_path):
  # With use_tpu=True a missing train_batch_size is refused at once, as
  # TPUEstimator refuses it (test_tpu_config.py).
  est = _estimator(tmp_path, train_batch_size=None, predict_batch_size=4,
                   use_tpu=False)
  with pytest.raises(ValueError, match='train needs a batch size'):
    est.train(models.train_input_fn, steps=1)
  with pytest.raises(ValueError, match='eval needs a batch size'):
    est.evaluate(models.train_input_fn, steps=1)


def _params_recording_model_fn(seen):
  """A public program's model_fn: a feature dict, a default-named layer,
  and params read as TPUEstimator gives them in each mode."""
  def model_fn(features, labels, mode, params):
    seen[mode] = dict(params)
    with v1.variable_scope(None, default_name='dense'):
      kernel = v1.get_variable('kernel', [2, 1],
                               initializer=v1.ones_initializer())
    predictions = tf.matmul(features['x'], kernel)
    if mode == tpu.ModeKeys.PREDICT:
      return tpu.TPUEstimatorSpec(mode, predictions={'y': predictions})
    loss = v1.losses.mean_squared_error(labels, predictions)
    optimizer = v1.train.GradientDescentOptimizer(0.1)
    if params['use_tpu']:
      optimizer = tpu.CrossShardOptimizer(optimizer)
    train_op = optimizer.minimize(loss, v1.train.get_global_step())
    return tpu.TPUEstimatorSpec(mode, loss=loss, train_op=train_op)
  return model_fn


def _xy_input_fn(params):
  x = np.ones((8, 2), np.float32)
  return tf.data.Dataset.from_tensor_slices(({'x': x}, x[:, :1])).repeat(
  ).batch(params['batch_size'], drop_remainder=True)


def _x_serving_input_fn():
  x = v1.placeholder(tf.float32, [None, 2], name='x')
  return tpu.export.ServingInputReceiver({'x': x}, {'x': x})


@pytest.mark.parametrize('use_tpu', [False, True])
def test_export_gives_model_fn_the_programs_params_without_a_batch_size(
    tmp_path, use_tpu):
  # TPUEstimator exports its CPU graph with params['use_tpu'] False and no
  # params['batch_size'], however it trains: a serving batch has any size.
  seen = {}
  est = tpu.TPUEstimator(
      model_fn=_params_recording_model_fn(seen), use_tpu=use_tpu,
      config=tpu.RunConfig(model_dir=str(tmp_path / 'model'),
                           tpu_config=tpu.TPUConfig(num_shards=2)),
      train_batch_size=4, predict_batch_size=2, params={'hidden': 3})
  est.train(_xy_input_fn, max_steps=1)
  assert seen['train']['batch_size'] == (2 if use_tpu else 4)
  export_dir = est.export_saved_model(str(tmp_path / 'export'),
                                      _x_serving_input_fn)
  assert seen['infer'] == {'hidden': 3, 'use_tpu': False}
  assert os.path.isdir(export_dir)


@pytest.mark.parametrize('per_host_input,input_batches', [
    (False, {'train': 2, 'eval': 4, 'infer': 4}),  # PER_SHARD_V1
    (True, {'train': 4, 'eval': 4, 'infer': 4}),  # PER_HOST_V1
    (tpu.InputPipelineConfig.PER_HOST_V2, {'train': 2, 'eval': 2,
                                           'infer': 2}),
])
def test_input_fn_batch_sizes_per_input_pipeline_as_tpu_estimator(
    tmp_path, per_host_input, input_batches):
  # TPUEstimator reads PER_SHARD_V1 input per core in training only: its
  # evaluation and prediction input_fn gets the whole batch, split over the
  # replicas, as PER_HOST_V1's; PER_HOST_V2 reads per core in every mode.
  seen, input_seen = {}, {}

  def input_fn(mode):
    def batches(params):
      input_seen[mode] = params['batch_size']
      return _xy_input_fn(params).take(2)
    return batches

  est = tpu.TPUEstimator(
      model_fn=_params_recording_model_fn(seen),
      config=tpu.RunConfig(model_dir=str(tmp_path), tpu_config=tpu.TPUConfig(
          num_shards=2, per_host_input_for_training=per_host_input)),
      train_batch_size=4, eval_batch_size=4, predict_batch_size=4)
  est.train(input_fn('train'), max_steps=1)
  est.evaluate(input_fn('eval'), steps=1)
  predictions = list(est.predict(input_fn('infer')))
  assert input_seen == input_batches
  assert {mode: params['batch_size'] for mode, params in seen.items()} == {
      'train': 2, 'eval': 2, 'infer': 2}
  assert len(predictions) == 2 * input_batches['infer']


def test_tpu_evaluation_of_metric_ops_raises_tpu_estimators_error(tmp_path):
  # A head returning a plain EstimatorSpec with eval_metric_ops for EVAL:
  # TPUEstimator evaluating as a TPU program (use_tpu and eval_on_tpu)
  # raises RuntimeError "... must have type`TPUEstimatorSpec`".
  recording = _params_recording_model_fn({})

  def model_fn(features, labels, mode, params):
    spec = recording(features, labels, mode, params)
    if mode != tpu.ModeKeys.EVAL:
      return spec
    return tpu.EstimatorSpec(mode, loss=spec.loss, eval_metric_ops={
        'mse': v1.metrics.mean_squared_error(labels, labels)})

  est = tpu.TPUEstimator(
      model_fn=model_fn, config=tpu.RunConfig(model_dir=str(tmp_path)),
      train_batch_size=4, eval_batch_size=4)
  est.train(_xy_input_fn, max_steps=1)
  with pytest.raises(RuntimeError,
                     match='TPU evaluation must have type`TPUEstimatorSpec`'):
    est.evaluate(_xy_input_fn, steps=1)
