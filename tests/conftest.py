"""Shared tiny models and inputs for the tests."""
import logging
import threading

import numpy as np
import pytest
import tensorflow as tf

import hookestimator as he
from hookestimator import compat

# For tests that compare with TensorFlow's own Estimator or TPUEstimator.
requires_estimator = pytest.mark.skipif(
    compat.ESTIMATOR is None,
    reason='tensorflow-estimator is not installed on this line (it ended '
    'with TF 2.15): nothing to compare against')

v1 = tf.compat.v1
FRAMEWORK_THREADS = ('InfeedController', 'OutfeedController')

logging.getLogger('hookestimator').setLevel(logging.INFO)
v1.logging.set_verbosity(v1.logging.ERROR)


def framework_threads():
  return [t.name for t in threading.enumerate() if t.name in FRAMEWORK_THREADS]


def dataset_of(num_examples, batch_size, repeat=True):
  rng = np.random.RandomState(0)
  x = rng.randn(num_examples, 4).astype(np.float32)
  y = (x.sum(axis=1) > 0).astype(np.int64)
  dataset = tf.data.Dataset.from_tensor_slices((x, y))
  if repeat:
    dataset = dataset.repeat()
  return dataset.batch(batch_size, drop_remainder=True)


def input_fn(params):
  return dataset_of(256, params['batch_size'])


def linear_model_fn(features, labels, mode, params):
  """A logistic-regression model; params may carry 'host_call' (a function
  of (loss, global_step) returning host_call) or 'hooks'."""
  w = v1.get_variable('w', [4, 2], initializer=v1.zeros_initializer())
  b = v1.get_variable('b', [2], initializer=v1.zeros_initializer())
  logits = tf.matmul(features, w) + b
  loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=labels, logits=logits))
  # A read of the global step that is ordered before the step's increment
  # (an unordered read may see the value after it).
  global_step = v1.train.get_global_step().read_value()
  with tf.control_dependencies([global_step]):
    train_op = v1.train.GradientDescentOptimizer(0.1).minimize(
        loss, global_step=v1.train.get_global_step())
  host_call = None
  if 'host_call' in params:
    host_call = params['host_call'](loss, global_step)
  return he.HookEstimatorSpec(mode=mode, loss=loss, train_op=train_op,
                              host_call=host_call,
                              training_hooks=params.get('hooks'))


@pytest.fixture
def make_estimator(tmp_path):
  def make(model_fn=linear_model_fn, model_dir=None, params=None,
           batch_size=8, **config):
    config.setdefault('save_checkpoints_steps', 1000)
    run_config = he.RunConfig(model_dir=str(model_dir or tmp_path / 'model'),
                              **config)
    return he.HookEstimator(model_fn, config=run_config, params=params,
                            train_batch_size=batch_size)
  return make


class StepRecorder(v1.train.SessionRunHook):
  """Records every SessionRunHook call and the global step after each run."""

  def __init__(self, stop_after_runs=None):
    self.calls = []
    self.steps = []
    self._stop_after_runs = stop_after_runs

  def begin(self):
    self.calls.append('begin')
    self._global_step = v1.train.get_global_step()

  def after_create_session(self, session, coord):
    self.calls.append('after_create_session')

  def before_run(self, run_context):
    self.calls.append('before_run')

  def after_run(self, run_context, run_values):
    self.calls.append('after_run')
    self.steps.append(int(run_context.session.run(self._global_step)))
    if self._stop_after_runs and len(self.steps) >= self._stop_after_runs:
      run_context.request_stop()

  def end(self, session):
    self.calls.append('end')


class HookFailure(Exception):
  """Raised by FailingHook."""


class FailingHook(v1.train.SessionRunHook):
  """Raises HookFailure in the after_run of run `fail_on_run` (1-based)."""

  def __init__(self, fail_on_run):
    self._runs = 0
    self._fail_on_run = fail_on_run

  def after_run(self, run_context, run_values):
    self._runs += 1
    if self._runs == self._fail_on_run:
      raise HookFailure('hook failed after run %d' % self._runs)


def scalar_events(model_dir):
  """(tag, step, value) of every scalar written to the event files directly
  under model_dir, every write kept."""
  import glob
  import os
  for path in sorted(glob.glob(os.path.join(str(model_dir),
                                            'events.out.tfevents*'))):
    for event in v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.HasField('simple_value'):
          yield value.tag, event.step, value.simple_value
        elif value.HasField('tensor') and value.tensor.dtype != tf.string:
          yield value.tag, event.step, float(tf.make_ndarray(value.tensor))


def read_scalars(model_dir):
  """{tag: {step: value}} from every event file under model_dir (not sub-dirs).

  The framework writes exactly one value per tag and step (and evaluate()
  one per call): a second one fails here, rather than silently replacing
  the first.
  """
  scalars = {}
  for tag, step, number in scalar_events(model_dir):
    steps = scalars.setdefault(tag, {})
    if step in steps:
      raise AssertionError(
          '%r was written more than once at step %d under %s (%r, then %r); '
          'expected exactly one value per step and tag' % (
              tag, step, model_dir, steps[step], number))
    steps[step] = number
  return scalars
