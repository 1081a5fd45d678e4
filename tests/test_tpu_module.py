"""hookestimator.tpu as a TF 1 program's whole TPU module (tf.contrib.tpu):
the names such programs take from it are there, TensorFlow's own objects
where they build without a TPU, and a program using them gets the numbers
TensorFlow's TPUEstimator gets, on one replica and on several."""
import os
import types

import numpy as np
import pytest
import tensorflow as tf

from hookestimator import compat
from hookestimator import tpu
from tests.conftest import framework_threads

v1 = tf.compat.v1
PROGRAM = os.path.join(os.path.dirname(__file__), 'tpu_contrib_program.py')
MODULE_LINE = 'tpu = tensorflow.contrib.tpu  # The program\'s TPU module.'
SWAPPED_LINE = 'from hookestimator import tpu'
HAS_CONTRIB = not compat.IS_TF2

# TensorFlow's own TPU names that TF 1 programs take from tf.contrib.tpu and
# that hookestimator.tpu gives as they are, on every line.
TF_TPU_NAMES = ('CrossShardOptimizer', 'batch_parallel', 'bfloat16_scope',
                'core', 'cross_replica_sum', 'initialize_system',
                'outside_compilation', 'replicate', 'rewrite', 'shard',
                'shutdown_system', 'repeat', 'while_loop')
# TPUEstimator's own names: hookestimator's.
ESTIMATOR_NAMES = ('TPUEstimator', 'TPUEstimatorSpec', 'RunConfig',
                   'TPUConfig', 'InputPipelineConfig')


def _tensorflows(name):
  """TensorFlow's object for tf.contrib.tpu's `name` on this line."""
  if HAS_CONTRIB:
    return getattr(tf.contrib.tpu, name)
  from tensorflow.python.tpu import training_loop  # pylint: disable=g-import-not-at-top
  if name in ('repeat', 'while_loop'):
    return getattr(training_loop, name)
  if name == 'AsyncCheckpointSaverHook':
    from tensorflow.python.tpu import async_checkpoint  # pylint: disable=g-import-not-at-top
    return async_checkpoint.AsyncCheckpointSaverHook
  return getattr(v1.tpu, name)


@pytest.mark.parametrize('name', TF_TPU_NAMES)
def test_tpu_names_are_tensorflows_own(name):
  assert getattr(tpu, name) is _tensorflows(name)


def test_async_checkpoint_saver_hook_where_tensorflow_has_it():
  if compat.TF_VERSION > (2, 15):
    with pytest.raises(AttributeError) as raised:
      tpu.AsyncCheckpointSaverHook  # pylint: disable=pointless-statement
    assert 'no AsyncCheckpointSaverHook on TensorFlow 2.' in str(raised.value)
  else:
    assert tpu.AsyncCheckpointSaverHook is _tensorflows(
        'AsyncCheckpointSaverHook')


def test_tpu_system_names_say_why_they_are_missing():
  with pytest.raises(AttributeError) as raised:
    tpu.keras_to_tpu_model  # pylint: disable=pointless-statement
  assert "no 'keras_to_tpu_model'" in str(raised.value)
  assert not hasattr(tpu, 'InfeedQueue')
  with pytest.raises(AttributeError, match="has no attribute 'nonsense'"):
    tpu.nonsense  # pylint: disable=pointless-statement


@pytest.mark.skipif(not HAS_CONTRIB, reason='tf.contrib ended with TF 1.15')
def test_every_tf_contrib_tpu_name_is_offered_or_explained():
  for name in dir(tf.contrib.tpu):
    if name.startswith('_'):
      continue
    try:
      getattr(tpu, name)
    except AttributeError as error:
      assert 'drives a TPU system itself' in str(error), name


def _stock_module():
  """The TPU module of this line's TensorFlow, as a TF 1 program sees
  it: tf.contrib.tpu on 1.15; on 2.15 the same names from
  tf.compat.v1.tpu and tf.compat.v1.estimator.tpu. None without
  tensorflow-estimator."""
  if HAS_CONTRIB:
    return tf.contrib.tpu
  if compat.ESTIMATOR is None:
    return None
  names = {name: _tensorflows(name) for name in TF_TPU_NAMES}
  names.update((name, getattr(v1.estimator.tpu, name))
               for name in ESTIMATOR_NAMES)
  return types.SimpleNamespace(**names)


def _load(tpu_module):
  """The program with its TPU module bound to `tpu_module` (None: swapped
  for hookestimator.tpu)."""
  with open(PROGRAM) as f:
    source = f.read()
  assert source.count(MODULE_LINE) == 1
  if tpu_module is None:
    source = source.replace(MODULE_LINE, SWAPPED_LINE)
    if compat.ESTIMATOR is None:
      # tf.estimator is gone with tensorflow-estimator: its ModeKeys too.
      source = source.replace('tf.estimator.', 'tpu.')
  elif not HAS_CONTRIB:
    source = source.replace(MODULE_LINE, 'tpu = STOCK_TPU')
  module = types.ModuleType('tpu_contrib_program')
  module.STOCK_TPU = tpu_module
  exec(compile(source, PROGRAM, 'exec'), module.__dict__)
  return module


def _probabilities(predictions):
  return np.stack([p['probabilities'] for p in predictions])


def _expected(tmp_path, precision):
  """What the program gives on one replica: TensorFlow's TPUEstimator
  (use_tpu=False) where it exists, else hookestimator's, each on one CPU."""
  stock = _stock_module()
  program = _load(stock) if stock is not None else _load(None)
  return program.run(str(tmp_path / 'expected'), use_tpu=False,
                     precision=precision)


def test_crossshardoptimizer_and_cross_replica_sum_over_replicas(tmp_path):
  expected, expected_predictions, expected_names = _expected(tmp_path,
                                                             'float32')
  program = _load(None)
  assert program.tpu is tpu
  # Four replicas on this machine's CPU: each a quarter of the global
  # batch; the images are centred by the global mean through
  # cross_replica_sum, the gradients summed by CrossShardOptimizer.
  results, predictions, names = program.run(str(tmp_path / 'he'),
                                            use_tpu=True)
  assert results['global_step'] == expected['global_step'] == 12
  assert results['loss'] == pytest.approx(expected['loss'], rel=1e-4)
  assert results['accuracy'] == pytest.approx(expected['accuracy'])
  np.testing.assert_allclose(_probabilities(predictions),
                             _probabilities(expected_predictions),
                             rtol=1e-4, atol=1e-6)
  assert sorted(names) == sorted(expected_names)
  assert framework_threads() == []


def test_cross_replica_sum_is_what_makes_replicas_agree(tmp_path):
  """Without the sum (each replica centring by its own quarter) the
  training differs: the comparison above can tell."""
  program = _load(None)
  alone = program._global_batch_mean
  program._global_batch_mean = lambda images, use_tpu: alone(images, False)
  apart, _, _ = program.run(str(tmp_path / 'apart'), use_tpu=True)
  expected, _, _ = _expected(tmp_path, 'float32')
  assert apart['loss'] != pytest.approx(expected['loss'], rel=1e-4)


def test_bfloat16_scope_with_replicas(tmp_path):
  expected, expected_predictions, expected_names = _expected(tmp_path,
                                                             'bfloat16')
  program = _load(None)
  model_dir = str(tmp_path / 'he')
  results, predictions, names = program.run(model_dir, use_tpu=True,
                                            precision='bfloat16')
  # The variables are float32, named as in a graph of their own.
  assert sorted(names) == sorted(expected_names)
  assert 'hidden/kernel' in names
  reader = v1.train.NewCheckpointReader(v1.train.latest_checkpoint(model_dir))
  assert reader.get_variable_to_dtype_map()['hidden/kernel'] == tf.float32
  # bfloat16 rounds each replica's gradient on its own: the numbers agree
  # to bfloat16's precision.
  assert results['global_step'] == 12
  assert results['loss'] == pytest.approx(expected['loss'], rel=2e-2)
  np.testing.assert_allclose(_probabilities(predictions),
                             _probabilities(expected_predictions),
                             rtol=2e-2, atol=2e-3)
  # Evaluation and prediction over four replicas read replica 0's
  # variables: the same as one replica reading the same checkpoint.
  one = program.estimator(model_dir, use_tpu=False, precision='bfloat16')
  assert one.evaluate(program.eval_input_fn, steps=4) == pytest.approx(
      results, rel=1e-6)
  np.testing.assert_allclose(
      _probabilities(one.predict(program.predict_input_fn)),
      _probabilities(predictions), rtol=1e-6, atol=1e-7)
  assert framework_threads() == []


@pytest.mark.skipif(compat.TF_VERSION > (2, 15),
                    reason='TensorFlow dropped AsyncCheckpointSaverHook '
                    'after 2.15')
def test_async_checkpoint_saver_hook_finds_the_saver(tmp_path):
  """TF's AsyncCheckpointSaverHook saves with the graph's saver, which
  Estimator puts in the SAVERS collection; hookestimator's is there too."""
  model_dir = str(tmp_path / 'model')
  program = _load(None)
  program_model_fn = program.model_fn

  def model_fn(features, labels, mode, params):
    spec = program_model_fn(features, labels, mode, params)
    hook = tpu.AsyncCheckpointSaverHook(checkpoint_dir=model_dir,
                                        save_steps=4)
    return spec._replace(training_hooks=[hook])
  program.model_fn = model_fn
  est = program.estimator(model_dir, use_tpu=False)
  est.train(program.train_input_fn, max_steps=10)
  state = v1.train.get_checkpoint_state(model_dir)
  steps = sorted(int(path.rsplit('-', 1)[1])
                 for path in state.all_model_checkpoint_paths)
  assert steps[-1] == 10
  if not compat.IS_TF2:
    # On TF 2.x its writer thread has no graph to save from, under
    # TensorFlow's Estimator as here: only the last save is written.
    assert steps == [0, 4, 8, 10]
  est.train(program.train_input_fn, max_steps=12)
  assert est.get_variable_value('global_step') == 12
