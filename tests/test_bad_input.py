"""Bad input to the public API: one matrix of cases, each raising its own
error type with a message that names the bad value and what was expected,
before any step runs, leaving model_dir exactly as it was."""
import os
import shutil

import pytest
import tensorflow as tf

import hookestimator as he
from hookestimator import compat
from hookestimator.devices import DeviceNotFoundError
from tests.conftest import (StepRecorder, dataset_of, framework_threads,
                            input_fn, linear_model_fn)

v1 = tf.compat.v1


# input_fns

def _no_static_batch(params):
  return dataset_of(64, params['batch_size']).unbatch().batch(
      params['batch_size'])


def _a_triple(params):
  return dataset_of(64, params['batch_size']).map(lambda x, y: (x, y, y))


def _a_string(params):
  del params
  return 'data.csv'


def _dynamic_feature_shape(params):
  return dataset_of(64, params['batch_size']).map(
      lambda x, y: (tf.boolean_mask(x, x[0] > 0, axis=1), y))


def _float64_features(params):
  return dataset_of(64, params['batch_size']).map(
      lambda x, y: (tf.cast(x, tf.float64), y))


def _float_labels(params):
  return dataset_of(64, params['batch_size']).map(
      lambda x, y: (x, tf.cast(y, tf.float32)))


# model_fns

def _spec_without(field):
  def model_fn(features, labels, mode, params):
    spec = linear_model_fn(features, labels, mode, params)
    return spec._replace(**{field: None})
  return model_fn


def _spec_with_loss(make_loss):
  def model_fn(features, labels, mode, params):
    spec = linear_model_fn(features, labels, mode, params)
    return spec._replace(loss=make_loss(spec.loss))
  return model_fn


def _host_call_model_fn(host_call_of):
  def model_fn(features, labels, mode, params):
    spec = linear_model_fn(features, labels, mode, params)
    return he.HookEstimatorSpec(mode=mode, loss=spec.loss,
                                train_op=spec.train_op,
                                host_call=host_call_of(spec.loss))
  return model_fn


def _other_model(w_shape, extra=False):
  """A model that is not the one the checkpoint holds."""
  def model_fn(features, labels, mode, params):
    w = v1.get_variable('w', w_shape, initializer=v1.zeros_initializer())
    logits = tf.matmul(features, w)[:, :2]
    if extra:
      logits += v1.get_variable('extra', [2])
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=labels, logits=logits))
    train_op = v1.train.GradientDescentOptimizer(0.1).minimize(
        loss, global_step=v1.train.get_global_step())
    return he.HookEstimatorSpec(mode=mode, loss=loss, train_op=train_op)
  return model_fn


def _lacks(kind):
  return not compat.physical_devices(kind.upper())


# Each case: (id, call, error type, pattern). `call(ctx)` makes the bad call;
# ctx.model_dir holds a checkpoint at step 2 of linear_model_fn, and
# ctx.train(**changes) trains on it with changes to the good arguments.
C = pytest.param
CASES = [
    # RunConfig
    C(lambda ctx: he.RunConfig(model_dir=3), TypeError,
      'model_dir must be a path string or None, got 3', id='model_dir-int'),
    C(lambda ctx: he.RunConfig(model_dir=''), ValueError,
      "model_dir must not be empty", id='model_dir-empty'),
    C(lambda ctx: he.RunConfig(iterations_per_loop=0), ValueError,
      'iterations_per_loop must be a positive integer, got 0',
      id='iterations_per_loop-0'),
    C(lambda ctx: he.RunConfig(iterations_per_loop=-2), ValueError,
      'iterations_per_loop must be a positive integer, got -2',
      id='iterations_per_loop-negative'),
    C(lambda ctx: he.RunConfig(iterations_per_loop=2.0), TypeError,
      r'iterations_per_loop must be a positive integer, got 2\.0',
      id='iterations_per_loop-float'),
    C(lambda ctx: he.RunConfig(iterations_per_loop=True), TypeError,
      'iterations_per_loop must be a positive integer, got True',
      id='iterations_per_loop-bool'),
    C(lambda ctx: he.RunConfig(iterations_per_loop='4'), TypeError,
      "iterations_per_loop must be a positive integer, got '4'",
      id='iterations_per_loop-str'),
    C(lambda ctx: he.RunConfig(save_checkpoints_steps=10,
                               save_checkpoints_secs=60), ValueError,
      'save_checkpoints_steps or save_checkpoints_secs, not both.*=10.*=60',
      id='checkpoint-intervals-both'),
    C(lambda ctx: he.RunConfig(save_checkpoints_steps=0), ValueError,
      'save_checkpoints_steps must be a positive integer, got 0',
      id='save_checkpoints_steps-0'),
    C(lambda ctx: he.RunConfig(save_checkpoints_steps='10'), TypeError,
      "save_checkpoints_steps must be a positive integer or None, got '10'",
      id='save_checkpoints_steps-str'),
    C(lambda ctx: he.RunConfig(save_checkpoints_secs=-1), ValueError,
      'save_checkpoints_secs must be a positive number, got -1',
      id='save_checkpoints_secs-negative'),
    C(lambda ctx: he.RunConfig(save_checkpoints_secs='60'), TypeError,
      "save_checkpoints_secs must be a positive number or None, got '60'",
      id='save_checkpoints_secs-str'),
    C(lambda ctx: he.RunConfig(keep_checkpoint_max=-1), ValueError,
      r'keep_checkpoint_max must be >= 0 \(0 keeps all\), got -1',
      id='keep_checkpoint_max-negative'),
    C(lambda ctx: he.RunConfig(keep_checkpoint_max=1.5), TypeError,
      r'keep_checkpoint_max must be an integer >= 0, got 1\.5',
      id='keep_checkpoint_max-float'),
    C(lambda ctx: he.RunConfig(log_step_count_steps=0), ValueError,
      'log_step_count_steps must be a positive integer, got 0',
      id='log_step_count_steps-0'),
    C(lambda ctx: he.RunConfig(session_config={'a': 1}), TypeError,
      "session_config must be a tf.compat.v1.ConfigProto or None, got 'dict'",
      id='session_config-dict'),
    C(lambda ctx: he.RunConfig(device='fpga'), ValueError,
      "device must be one of 'cpu', 'gpu', 'tpu', got 'fpga'",
      id='device-unknown'),
    C(lambda ctx: he.RunConfig(check_nan_loss='yes'), TypeError,
      "check_nan_loss must be True or False, got 'yes'",
      id='check_nan_loss-str'),
    # HookEstimator
    C(lambda ctx: he.HookEstimator('model'), TypeError,
      "model_fn must be callable, got 'model'", id='model_fn-str'),
    C(lambda ctx: he.HookEstimator(lambda inputs, mode: None), ValueError,
      r"must include features argument: it must take `features` by name; "
      r"its arguments are \['inputs', 'mode'\]", id='model_fn-no-features'),
    C(lambda ctx: he.HookEstimator(linear_model_fn, config='cfg'), TypeError,
      "config must be a hookestimator.RunConfig, got 'cfg'", id='config-str'),
    C(lambda ctx: he.HookEstimator(linear_model_fn, params=[1]), TypeError,
      r'params must be a dict or None, got \[1\]', id='params-list'),
    C(lambda ctx: he.HookEstimator(linear_model_fn,
                                   params={'batch_size': 16}), ValueError,
      "params sets the reserved key 'batch_size' \\(to 16\\)",
      id='params-batch_size'),
    C(lambda ctx: he.HookEstimator(linear_model_fn, train_batch_size=0),
      ValueError, 'train_batch_size must be a positive integer, got 0',
      id='train_batch_size-0'),
    C(lambda ctx: he.HookEstimator(linear_model_fn, train_batch_size=2.5),
      TypeError, r'train_batch_size must be a positive integer, got 2\.5',
      id='train_batch_size-float'),
    # train() arguments
    C(lambda ctx: ctx.train(steps=5, max_steps=10), ValueError,
      'steps or max_steps, not both; got steps=5 and max_steps=10',
      id='steps-and-max_steps'),
    C(lambda ctx: ctx.train(steps=0), ValueError,
      'steps must be a positive integer, got 0', id='steps-0'),
    C(lambda ctx: ctx.train(steps=-3), ValueError,
      'steps must be a positive integer, got -3', id='steps-negative'),
    C(lambda ctx: ctx.train(steps=2.5), TypeError,
      r'steps must be a positive integer or None, got 2\.5', id='steps-float'),
    C(lambda ctx: ctx.train(max_steps='10'), TypeError,
      "max_steps must be a positive integer or None, got '10'",
      id='max_steps-str'),
    C(lambda ctx: ctx.train(max_steps=0), ValueError,
      'max_steps must be a positive integer, got 0', id='max_steps-0'),
    C(lambda ctx: ctx.train(hooks=['not a hook']), TypeError,
      "hooks must be SessionRunHook instances, got 'not a hook'",
      id='hooks-item'),
    C(lambda ctx: ctx.train(hooks=StepRecorder()), TypeError,
      'hooks must be a list of SessionRunHooks, got <', id='hooks-not-a-list'),
    C(lambda ctx: ctx.train(input_fn='not callable'), TypeError,
      "input_fn must be callable, got 'not callable'", id='input_fn-str'),
    # input_fn's dataset
    C(lambda ctx: ctx.train(input_fn=_a_string), TypeError,
      r"input_fn must return a tf.data.Dataset, or tensors \(as from an "
      r"iterator's get_next\(\)\): .*; its features hold 'data.csv'",
      id='dataset-string'),
    C(lambda ctx: ctx.train(input_fn=_a_triple), ValueError,
      r'input_fn should return \(features, labels\) as a len 2 tuple, or '
      r'the features alone .*; its elements are a tuple of 3',
      id='dataset-triple'),
    # Static shapes where a queue, a TPU or several replicas need them
    # (one replica reading its own input in its loop takes any shapes).
    C(lambda ctx: ctx.train(input_fn=_no_static_batch,
                            feeding='infeed_thread'), ValueError,
      r'features has shape \((\?|None), 4\); the features to the model must '
      r'have static shape here: the feeding queues need fully defined '
      r'static shapes \(batch with drop_remainder=True',
      id='dataset-no-static-batch-queue'),
    C(lambda ctx: ctx.train(input_fn=_no_static_batch, num_replicas=2),
      ValueError,
      r"features has shape \((\?|None), 4\); the features to the model must "
      r"have static shape here: 2 replicas take equal shares of each step's "
      r'input, which needs fully defined static shapes',
      id='dataset-no-static-batch-replicas'),
    C(lambda ctx: ctx.train(input_fn=_dynamic_feature_shape,
                            feeding='infeed_thread'), ValueError,
      r'features has shape \(8, (\?|None)\); the features to the model must '
      r'have static shape here: the feeding queues need fully defined '
      r'static shapes', id='dataset-dynamic-shape-queue'),
    # dtypes of input_fn against the model
    C(lambda ctx: ctx.train(input_fn=_float64_features), TypeError,
      'has type float32 that does not match type float64',
      id='dtype-features'),
    C(lambda ctx: ctx.train(input_fn=_float_labels), TypeError,
      "'labels' has DataType float32 not in list of allowed values: int32, "
      'int64', id='dtype-labels'),
    # model_fn's spec
    C(lambda ctx: ctx.train(model_fn=_spec_without('loss')), ValueError,
      'TRAIN spec without loss; expected a scalar loss tensor',
      id='spec-no-loss'),
    C(lambda ctx: ctx.train(model_fn=_spec_without('train_op')), ValueError,
      'TRAIN spec without train_op; expected the op', id='spec-no-train_op'),
    C(lambda ctx: ctx.train(model_fn=_spec_with_loss(
        lambda loss: tf.fill([2], loss))), ValueError,
      r'loss must be a scalar, got shape \(2,\)', id='spec-loss-not-scalar'),
    C(lambda ctx: ctx.train(model_fn=_spec_with_loss(
        lambda loss: tf.cast(loss, tf.int32))), TypeError,
      'loss must be a floating-point tensor, got int32', id='spec-loss-int'),
    C(lambda ctx: ctx.train(model_fn=_host_call_model_fn(
        lambda loss: (lambda x: {}, [loss]))), ValueError,
      r'host_call tensor 0 .* has shape \(\); host_call tensors need rank >= '
      '1', id='host_call-rank-0'),
    C(lambda ctx: ctx.train(model_fn=_host_call_model_fn(
        lambda loss: (lambda x, y: {}, [tf.reshape(loss, [1])]))), ValueError,
      'host_call fn <lambda> does not take 1 positional arguments',
      id='host_call-arity'),
    C(lambda ctx: ctx.train(model_fn=_host_call_model_fn(
        lambda loss: (lambda x: {}, {'y': tf.reshape(loss, [1])}))),
      ValueError, r"does not accept the keyword arguments \['y'\]",
      id='host_call-keywords'),
    C(lambda ctx: ctx.train(model_fn=_host_call_model_fn(
        lambda loss: (lambda x: {}, 'loss'))), TypeError,
      "host_call tensors must be a list or a dict of tensors, got 'loss'",
      id='host_call-tensors-str'),
    C(lambda ctx: ctx.train(
        model_fn=lambda features, labels, mode, params: {'loss': 1}),
      TypeError, r"must return a HookEstimatorSpec or an "
      r"EstimatorSpec, got \{'loss': 1\}", id='spec-dict'),
    # model_dir
    C(lambda ctx: ctx.train(model_fn=_other_model([4, 3])),
      he.CheckpointMismatchError,
      r'holds checkpoint model.ckpt-2 of a different model: w has shape '
      r'\[4, 3\] in the model but \[4, 2\] in the checkpoint',
      id='model_dir-other-shapes'),
    C(lambda ctx: ctx.train(model_fn=_other_model([4, 2], extra=True)),
      he.CheckpointMismatchError,
      r'of a different model: extra \(float32 \[2\]\) is not in the '
      r'checkpoint', id='model_dir-other-variables'),
    C(lambda ctx: ctx.train(model_dir=os.path.join(ctx.files[0], 'model')),
      NotADirectoryError, r'model_dir .*/checkpoint/model cannot be a '
      r'directory: .*/checkpoint is a file', id='model_dir-under-a-file'),
    C(lambda ctx: ctx.train(read_only=True), PermissionError,
      r'model_dir .* is not writable \(model_dir is not writable by this '
      r'process\)', id='model_dir-read-only',
      marks=pytest.mark.skipif(os.geteuid() == 0,
                               reason='root writes to read-only directories')),
    # devices
    C(lambda ctx: ctx.train(device='gpu'), DeviceNotFoundError,
      "device='gpu' was requested but this machine has no GPU device",
      id='device-gpu', marks=pytest.mark.skipif(not _lacks('gpu'),
                                                reason='has a GPU')),
    C(lambda ctx: ctx.train(device='tpu'), DeviceNotFoundError,
      "device='tpu' was requested but this machine has no TPU device.*needs "
      'a TPU host', id='device-tpu',
      marks=pytest.mark.skipif(not _lacks('tpu'), reason='has a TPU')),
]


@pytest.fixture(scope='module')
def checkpointed_dir(tmp_path_factory):
  """A model_dir with a checkpoint of linear_model_fn at step 2."""
  model_dir = str(tmp_path_factory.mktemp('checkpointed') / 'model')
  he.HookEstimator(linear_model_fn, he.RunConfig(
      model_dir=model_dir, iterations_per_loop=2), train_batch_size=8).train(
          input_fn, steps=2)
  return model_dir


class Context(object):
  """A copy of checkpointed_dir, and bad calls against it."""

  def __init__(self, make_estimator, checkpointed, model_dir):
    self._make_estimator = make_estimator
    shutil.copytree(checkpointed, model_dir)
    self.model_dir = model_dir
    self.files = [os.path.join(self.model_dir, 'checkpoint')]

  def train(self, input_fn=input_fn, model_fn=linear_model_fn, model_dir=None,
            read_only=False, **kwargs):
    config = {k: kwargs.pop(k) for k in ('device', 'feeding', 'num_replicas')
              if k in kwargs}
    est = self._make_estimator(model_fn=model_fn,
                               model_dir=model_dir or self.model_dir, **config)
    if read_only:
      os.chmod(self.model_dir, 0o500)
    try:
      if 'max_steps' not in kwargs:
        kwargs.setdefault('steps', 3)
      return est.train(input_fn, **kwargs)
    finally:
      os.chmod(self.model_dir, 0o700)

  def state(self):
    """Every file under model_dir with its size and modification time."""
    found = {}
    for root, _, names in os.walk(self.model_dir):
      for name in names:
        path = os.path.join(root, name)
        found[path] = (os.path.getsize(path), os.stat(path).st_mtime_ns)
    return found


@pytest.mark.timeout(60)
@pytest.mark.parametrize('call,error,pattern', CASES)
def test_bad_input_is_rejected_before_anything_runs(
    make_estimator, checkpointed_dir, tmp_path, call, error, pattern):
  ctx = Context(make_estimator, checkpointed_dir, str(tmp_path / 'model'))
  before = ctx.state()
  with pytest.raises(error, match=pattern) as raised:
    call(ctx)
  assert type(raised.value) is error  # pylint: disable=unidiomatic-typecheck
  assert ctx.state() == before
  assert framework_threads() == []
  assert v1.train.load_variable(ctx.model_dir, 'global_step') == 2


def test_run_config_defaults_to_saving_every_600_seconds():
  config = he.RunConfig()
  assert config.save_checkpoints_secs == 600
  assert config.save_checkpoints_steps is None
  assert he.RunConfig(save_checkpoints_steps=5).save_checkpoints_secs is None
