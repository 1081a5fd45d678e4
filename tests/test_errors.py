"""Errors anywhere come out of train() with their original type and message,
within seconds, with no framework thread left alive."""
import time

import pytest
import tensorflow as tf

from tests.conftest import (FailingHook, HookFailure, StepRecorder,
                            framework_threads, input_fn, linear_model_fn)

v1 = tf.compat.v1
DEADLINE_SECS = 30


class Boom(Exception):
  pass


def _train_expecting(est, error_type, match, **kwargs):
  start = time.monotonic()
  with pytest.raises(error_type, match=match) as info:
    est.train(kwargs.pop('input_fn', input_fn), **kwargs)
  assert time.monotonic() - start < DEADLINE_SECS
  assert framework_threads() == []
  return info.value


def failing_input_fn(params):
  """Batch 7 (0-based) fails in the input pipeline's map."""
  def check(i):
    ok = tf.debugging.Assert(i < 7, ['input failed at batch', i])
    with tf.control_dependencies([ok]):
      return (tf.fill([params['batch_size'], 4], tf.cast(i, tf.float32)),
              tf.fill([params['batch_size']], i % 2))
  return tf.data.Dataset.range(1000).map(check)


@pytest.mark.timeout(60)
@pytest.mark.parametrize('iterations_per_loop,steps', [(4, 100), (1000, 5000)])
def test_input_pipeline_error(make_estimator, iterations_per_loop, steps):
  est = make_estimator(iterations_per_loop=iterations_per_loop)
  _train_expecting(est, tf.errors.InvalidArgumentError,
                   'input failed at batch', input_fn=failing_input_fn,
                   steps=steps)
  # Nothing was saved for a failed run past the last good state.
  assert est.latest_checkpoint() is None


@pytest.mark.timeout(60)
def test_model_error_at_step_k(make_estimator):
  def model_fn(features, labels, mode, params):
    step = v1.train.get_global_step().read_value()
    ok = tf.debugging.Assert(step < 5, ['model failed at step', step])
    with tf.control_dependencies([ok]):
      features = tf.identity(features)
    return linear_model_fn(features, labels, mode, params)
  est = make_estimator(model_fn=model_fn, iterations_per_loop=3)
  _train_expecting(est, tf.errors.InvalidArgumentError,
                   'model failed at step', steps=100)


@pytest.mark.timeout(60)
def test_host_call_error_at_runtime(make_estimator):
  def host_call(loss, global_step):
    def fn(loss, step):
      ok = tf.debugging.Assert(step[0] < 3, ['host_call failed at', step])
      with tf.control_dependencies([ok]):
        return {'loss_copy': tf.identity(loss[0])}
    return fn, [tf.reshape(loss, [1]), tf.reshape(global_step, [1])]
  est = make_estimator(iterations_per_loop=2, params={'host_call': host_call})
  _train_expecting(est, tf.errors.InvalidArgumentError, 'host_call failed at',
                   steps=1000)


@pytest.mark.timeout(60)
def test_host_call_python_error_keeps_its_type(make_estimator):
  def host_call(loss, global_step):
    def fn(loss):
      def explode(value):
        raise Boom('host_call exploded on %s' % value)
      return [tf.compat.v1.py_func(explode, [loss], tf.float32)]
    return fn, [tf.reshape(loss, [1])]
  est = make_estimator(iterations_per_loop=2, params={'host_call': host_call})
  # py_func turns Python errors into a TF error carrying the message.
  _train_expecting(est, tf.errors.OpError, 'host_call exploded', steps=100)


@pytest.mark.timeout(60)
def test_user_hook_error_keeps_its_type_and_message(make_estimator):
  est = make_estimator(iterations_per_loop=3)
  error = _train_expecting(est, HookFailure, 'hook failed after run 2',
                           steps=100, hooks=[FailingHook(2)])
  assert isinstance(error, HookFailure)


@pytest.mark.timeout(60)
def test_training_hook_error_from_model_fn(make_estimator):
  est = make_estimator(iterations_per_loop=2,
                       params={'hooks': [FailingHook(1)]})
  _train_expecting(est, HookFailure, 'hook failed after run 1', steps=100)


@pytest.mark.timeout(60)
def test_a_failed_train_leaves_the_estimator_usable(make_estimator):
  est = make_estimator(iterations_per_loop=3)
  est.train(input_fn, steps=3)
  _train_expecting(est, HookFailure, 'hook failed', steps=100,
                   hooks=[FailingHook(1)])
  recorder = StepRecorder()
  est.train(input_fn, steps=3, hooks=[recorder])
  assert recorder.steps == [6]


@pytest.mark.timeout(60)
def test_global_step_that_never_advances_is_an_error(make_estimator):
  def model_fn(features, labels, mode, params):
    spec = linear_model_fn(features, labels, mode, params)
    w = [v for v in v1.trainable_variables() if v.op.name == 'w'][0]
    return spec._replace(train_op=v1.train.GradientDescentOptimizer(
        0.1).minimize(spec.loss, var_list=[w]))
  est = make_estimator(model_fn=model_fn, iterations_per_loop=2)
  _train_expecting(est, RuntimeError, 'global step did not advance', steps=10)
