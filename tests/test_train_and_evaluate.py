"""train_and_evaluate(): evaluations between training loops in one graph and
one session, at the expected steps, each reading the model at its step."""
import os

import pytest
import tensorflow as tf

import hookestimator as he
from hookestimator import devices
from tests import inference_models as models
from tests.conftest import StepRecorder, framework_threads, read_scalars

v1 = tf.compat.v1


def eval_input_fn(params):
  return models.dataset(21, params['batch_size'])


class Counts(object):
  """Counts model_fn calls per mode and device system initialisations."""

  def __init__(self, monkeypatch):
    self.model_fn = {}
    self.initialize = 0
    original = devices.Device.initialize

    def initialize(device, session_config=None):
      self.initialize += 1
      return original(device, session_config)
    monkeypatch.setattr(devices.Device, 'initialize', initialize)

  def wrap(self, model_fn):
    def counted(features, labels, mode, params):
      self.model_fn[mode] = self.model_fn.get(mode, 0) + 1
      return model_fn(features, labels, mode, params)
    return counted


def test_evaluates_at_every_multiple_and_at_the_end_building_once(
    tmp_path, monkeypatch):
  counts = Counts(monkeypatch)
  est = models.make(tmp_path, iterations_per_loop=4,
                    model=counts.wrap(models.model_fn))
  recorder = StepRecorder()
  history = est.train_and_evaluate(models.train_input_fn, eval_input_fn,
                                   max_steps=14, eval_every_steps=5,
                                   hooks=[recorder])
  assert [r['global_step'] for r in history] == [5, 10, 14]
  # Training loops end at the evaluation steps: 4, 5 | 9, 10 | 14.
  assert recorder.steps == [4, 5, 9, 10, 14]
  # One graph, built once: model_fn built once per mode, and in EVAL mode
  # once more in a scratch graph, which tells the checkpoint's names of
  # the variables the rounds read; the device initialised once.
  assert counts.model_fn == {'train': 1, 'eval': 2}
  assert counts.initialize == 1
  scalars = read_scalars(os.path.join(est.model_dir, 'eval'))
  assert sorted(scalars['accuracy']) == [5, 10, 14]
  for result in history:
    assert scalars['loss'][result['global_step']] == pytest.approx(
        result['loss'])
  assert est.get_variable_value('global_step') == 14
  assert framework_threads() == []


def test_each_evaluation_reads_the_model_at_its_step(tmp_path):
  est = models.make(tmp_path, iterations_per_loop=3)
  est = he.HookEstimator(models.model_fn, est.config.replace(
      save_checkpoints_steps=4, keep_checkpoint_max=0), train_batch_size=8)
  history = est.train_and_evaluate(models.train_input_fn, eval_input_fn,
                                   max_steps=12, eval_every_steps=4,
                                   eval_steps=2, name='rounds')
  assert [r['global_step'] for r in history] == [4, 8, 12]
  for result in history:
    step = result['global_step']
    alone = est.evaluate(
        eval_input_fn, steps=2,
        checkpoint_path=os.path.join(est.model_dir, 'model.ckpt-%d' % step))
    assert alone['global_step'] == step
    for name, value in result.items():
      assert alone[name] == pytest.approx(value, rel=1e-6), (step, name)
  # Rounds differ: the model moved between them.
  assert history[0]['loss'] != history[2]['loss']
  assert sorted(read_scalars(os.path.join(est.model_dir, 'eval_rounds'))[
      'loss']) == [4, 8, 12]


def test_resuming_and_a_finished_model(tmp_path):
  est = models.make(tmp_path, iterations_per_loop=4)
  est.train(models.train_input_fn, steps=3)
  history = est.train_and_evaluate(models.train_input_fn, eval_input_fn,
                                   max_steps=9, eval_every_steps=4)
  assert [r['global_step'] for r in history] == [4, 8, 9]
  again = est.train_and_evaluate(models.train_input_fn, eval_input_fn,
                                 max_steps=9, eval_every_steps=4)
  assert again == [est.evaluate(eval_input_fn)]
  assert again[0]['global_step'] == 9


@pytest.mark.timeout(60)
def test_an_error_in_an_evaluation_comes_out_with_no_thread_left(tmp_path):
  def failing_eval_input_fn(params):
    return models.failing_dataset(params['batch_size'], threshold=1.0)
  est = models.make(tmp_path, iterations_per_loop=2)
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match='eval input failed'):
    est.train_and_evaluate(models.train_input_fn, failing_eval_input_fn,
                           max_steps=10, eval_every_steps=2)
  assert framework_threads() == []


@pytest.mark.parametrize('kwargs,error,match', [
    (dict(max_steps=0), ValueError, 'max_steps.*0'),
    (dict(max_steps=None), TypeError, 'max_steps.*None'),
    (dict(eval_every_steps=-1), ValueError, 'eval_every_steps.*-1'),
    (dict(eval_steps=1.5), TypeError, 'eval_steps.*1.5'),
    (dict(eval_input_fn=None), TypeError, 'eval_input_fn must be callable'),
    (dict(hooks=['x']), TypeError, 'SessionRunHook'),
    (dict(name=''), ValueError, 'name'),
])
def test_bad_arguments_fail_before_anything_runs(tmp_path, kwargs, error,
                                                 match):
  est = models.make(tmp_path)
  arguments = dict(train_input_fn=models.train_input_fn,
                   eval_input_fn=eval_input_fn, max_steps=4,
                   eval_every_steps=2)
  arguments.update(kwargs)
  with pytest.raises(error, match=match):
    est.train_and_evaluate(**arguments)
  assert not os.path.exists(est.model_dir)


def test_the_end_of_the_training_input_is_evaluated_a_stop_request_not(
    tmp_path):
  def finite_train_input_fn(params):
    return models.dataset(56, params['batch_size'], drop_remainder=True,
                          seed=1)
  est = models.make(tmp_path, iterations_per_loop=4)
  history = est.train_and_evaluate(finite_train_input_fn, eval_input_fn,
                                   max_steps=100, eval_every_steps=5)
  assert [r['global_step'] for r in history] == [5, 7]

  stopper = StepRecorder(stop_after_runs=2)
  other = models.make(tmp_path, name='stopped', iterations_per_loop=4)
  history = other.train_and_evaluate(models.train_input_fn, eval_input_fn,
                                     max_steps=100, eval_every_steps=5,
                                     hooks=[stopper])
  assert stopper.steps == [4, 5]
  assert [r['global_step'] for r in history] == [5]
