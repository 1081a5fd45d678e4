"""Bad input gets a clear error naming the value, before any step runs."""
import os

import pytest
import tensorflow as tf

import hookestimator as he
from hookestimator import compat
from hookestimator.devices import DeviceNotFoundError
from tests.conftest import dataset_of, framework_threads, input_fn, linear_model_fn

v1 = tf.compat.v1


@pytest.mark.parametrize('kwargs,error,match', [
    (dict(iterations_per_loop=0), ValueError, 'iterations_per_loop.*0'),
    (dict(iterations_per_loop=-2), ValueError, 'iterations_per_loop.*-2'),
    (dict(iterations_per_loop=2.0), TypeError, 'iterations_per_loop.*2.0'),
    (dict(iterations_per_loop=True), TypeError, 'iterations_per_loop.*True'),
    (dict(iterations_per_loop='4'), TypeError, "iterations_per_loop.*'4'"),
    (dict(save_checkpoints_steps=10, save_checkpoints_secs=60), ValueError,
     'not both.*10.*60'),
    (dict(save_checkpoints_steps=0), ValueError, 'save_checkpoints_steps.*0'),
    (dict(save_checkpoints_secs=-1), ValueError, 'save_checkpoints_secs.*-1'),
    (dict(keep_checkpoint_max=-1), ValueError, 'keep_checkpoint_max.*-1'),
    (dict(log_step_count_steps=0), ValueError, 'log_step_count_steps.*0'),
    (dict(device='fpga'), ValueError, "device.*'cpu'.*'fpga'"),
    (dict(session_config={'a': 1}), TypeError, 'ConfigProto'),
    (dict(model_dir=3), TypeError, 'model_dir.*3'),
])
def test_run_config_rejects(kwargs, error, match):
  with pytest.raises(error, match=match):
    he.RunConfig(**kwargs)


def test_run_config_defaults_to_saving_every_600_seconds():
  config = he.RunConfig()
  assert config.save_checkpoints_secs == 600
  assert config.save_checkpoints_steps is None
  assert he.RunConfig(save_checkpoints_steps=5).save_checkpoints_secs is None


@pytest.mark.parametrize('kwargs,error,match', [
    (dict(params={'batch_size': 16}), ValueError, "reserved key 'batch_size'"),
    (dict(params=[1]), TypeError, 'params must be a dict'),
    (dict(train_batch_size=0), ValueError, 'train_batch_size.*0'),
    (dict(config='cfg'), TypeError, 'RunConfig'),
])
def test_estimator_constructor_rejects(kwargs, error, match):
  with pytest.raises(error, match=match):
    he.HookEstimator(linear_model_fn, **kwargs)


def test_model_fn_must_be_callable_with_features():
  with pytest.raises(TypeError, match='model_fn must be callable'):
    he.HookEstimator('model')
  with pytest.raises(ValueError, match='features'):
    he.HookEstimator(lambda inputs, mode: None)


@pytest.fixture
def trained(make_estimator):
  """An estimator with a checkpoint at step 2, and the checkpoint files."""
  est = make_estimator(iterations_per_loop=2)
  est.train(input_fn, steps=2)
  return est, sorted(os.listdir(est.model_dir))


def _assert_untouched(est, files):
  assert sorted(os.listdir(est.model_dir)) == files
  assert est.get_variable_value('global_step') == 2
  assert framework_threads() == []


@pytest.mark.parametrize('kwargs,error,match', [
    (dict(steps=5, max_steps=10), ValueError, 'not both.*steps=5.*max_steps=10'),
    (dict(steps=0), ValueError, 'steps.*0'),
    (dict(steps=-3), ValueError, 'steps.*-3'),
    (dict(steps=2.5), TypeError, 'steps.*2.5'),
    (dict(max_steps='10'), TypeError, "max_steps.*'10'"),
    (dict(max_steps=0), ValueError, 'max_steps.*0'),
    (dict(steps=3, hooks=['not a hook']), TypeError, 'SessionRunHook'),
])
def test_train_arguments_rejected_before_anything_runs(trained, kwargs, error,
                                                       match):
  est, files = trained
  with pytest.raises(error, match=match):
    est.train(input_fn, **kwargs)
  _assert_untouched(est, files)


def _no_static_batch(params):
  x = tf.zeros([64, 4])
  y = tf.zeros([64], tf.int64)
  return tf.data.Dataset.from_tensor_slices((x, y)).batch(params['batch_size'])


def _wrong_batch(params):
  x = tf.zeros([64, 4])
  y = tf.zeros([64], tf.int64)
  return tf.data.Dataset.from_tensor_slices((x, y)).batch(
      params['batch_size'] + 1, drop_remainder=True)


def _not_a_pair(params):
  return tf.data.Dataset.from_tensor_slices(tf.zeros([64, 4])).batch(
      params['batch_size'], drop_remainder=True)


def _a_tensor(params):
  return tf.zeros([params['batch_size'], 4])


def _dynamic_feature_shape(params):
  return dataset_of(64, params['batch_size']).map(
      lambda x, y: (tf.boolean_mask(x, x[:, 0] > 0), y))


@pytest.mark.parametrize('bad_input_fn,error,match', [
    (_no_static_batch, ValueError, r'features.*\(\?|None.*batch_size.*= 8'),
    (_wrong_batch, ValueError, r'9.*batch_size"\] = 8'),
    (_not_a_pair, ValueError, r'\(features, labels\) pairs'),
    (_a_tensor, TypeError, 'must return a tf.data.Dataset'),
    (_dynamic_feature_shape, ValueError, 'features'),
    ('not callable', TypeError, 'input_fn must be callable'),
])
def test_bad_datasets_rejected_before_anything_runs(trained, bad_input_fn,
                                                    error, match):
  est, files = trained
  with pytest.raises(error, match=match):
    est.train(bad_input_fn, steps=3)
  _assert_untouched(est, files)


def _spec_without(field):
  def model_fn(features, labels, mode, params):
    spec = linear_model_fn(features, labels, mode, params)
    return spec._replace(**{field: None})
  return model_fn


def _host_call_model_fn(host_call_of):
  def model_fn(features, labels, mode, params):
    spec = linear_model_fn(features, labels, mode, params)
    return he.HookEstimatorSpec(mode=mode, loss=spec.loss,
                                train_op=spec.train_op,
                                host_call=host_call_of(spec.loss))
  return model_fn


@pytest.mark.parametrize('model_fn,error,match', [
    (_spec_without('loss'), ValueError, 'without loss'),
    (_spec_without('train_op'), ValueError, 'without train_op'),
    (_host_call_model_fn(lambda loss: (lambda x: {}, [loss])), ValueError,
     'rank >= 1'),
    (_host_call_model_fn(lambda loss: (lambda x, y: {},
                                       [tf.reshape(loss, [1])])),
     ValueError, 'does not take 1 positional'),
    (_host_call_model_fn(lambda loss: (lambda x: {},
                                       {'y': tf.reshape(loss, [1])})),
     ValueError, r"keyword arguments \['y'\]"),
    (_host_call_model_fn(lambda loss: (lambda x: {}, 'loss')), TypeError,
     'list or a dict'),
    (lambda features, labels, mode, params: {'loss': 1}, TypeError,
     'HookEstimatorSpec'),
])
def test_bad_model_fn_specs_rejected_before_anything_runs(
    trained, make_estimator, model_fn, error, match):
  est, files = trained
  bad = make_estimator(model_fn=model_fn, model_dir=est.model_dir)
  with pytest.raises(error, match=match):
    bad.train(input_fn, steps=3)
  _assert_untouched(est, files)


@pytest.mark.parametrize('kind,match', [
    ('gpu', "device='gpu'.*no GPU"),
    ('tpu', 'needs a TPU host'),
])
def test_device_kind_this_machine_lacks(trained, make_estimator, kind, match):
  if compat.physical_devices(kind.upper()):
    pytest.skip('this machine has a %s' % kind.upper())
  est, files = trained
  missing = make_estimator(model_dir=est.model_dir, device=kind)
  with pytest.raises(DeviceNotFoundError, match=match):
    missing.train(input_fn, steps=3)
  _assert_untouched(est, files)
