"""Nothing outlives a run: each train(), evaluate(), predict(),
train_and_evaluate() and export_saved_model() call, and the command, ends
every thread it started and closes every event writer it opened, whether
it succeeded, failed or was stopped by a signal; its session goes as soon
as it returns; repeated calls keep no graph alive. (The thread pools every
session shares: tests/test_thread_pools.py.)"""
import gc
import glob
import os
import signal
import threading
import weakref

import gin
import pytest
import tensorflow as tf

import hookestimator as he
from hookestimator import event_writer
from hookestimator import main as main_lib
from hookestimator import signals
from tests import inference_models as models
from tests.conftest import (FailingHook, HookFailure, framework_threads,
                            input_fn, read_scalars)
from tests.test_signals import SendSignal

v1 = tf.compat.v1


def _threads():
  return {(t.ident, t.name) for t in threading.enumerate()}


def _left_behind(before):
  """Names of the threads alive now that were not before."""
  return sorted(name for ident, name in _threads() - before)


def _predict_input_fn(params):
  return models.dataset(10, params['batch_size'], labels=False)


def _eval_input_fn(params):
  return models.dataset(20, params['batch_size'])


def _serving_input_fn():
  x = v1.placeholder(tf.float32, [None, models.NUM_FEATURES], name='x')
  return he.export.TensorServingInputReceiver(x, {'x': x})


CALLS = {
    'train': lambda est: est.train(models.train_input_fn, steps=6),
    'evaluate': lambda est: est.evaluate(_eval_input_fn),
    'predict': lambda est: list(est.predict(_predict_input_fn)),
    'predict-closed-early': lambda est: next(est.predict(_predict_input_fn)),
    'train_and_evaluate': lambda est: est.train_and_evaluate(
        models.train_input_fn, _eval_input_fn, max_steps=12,
        eval_every_steps=3),
    'export_saved_model': lambda est: est.export_saved_model(
        os.path.join(est.model_dir, 'export'), _serving_input_fn),
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize('call', sorted(CALLS))
def test_calls_into_new_model_dirs_leave_no_thread_behind(tmp_path, call):
  # Three model_dirs: a writer cached per directory would show up three
  # times over. (The training that makes each checkpoint counts too.)
  before = _threads()
  for i in range(3):
    CALLS[call](models.trained(tmp_path / str(i), steps=3))
  assert _left_behind(before) == []


def _fails_at_its_second_loop(est):
  est.train(models.train_input_fn, steps=12, hooks=[FailingHook(2)])


def _fails_in_its_input(est):
  est.evaluate(lambda params: models.failing_dataset(params['batch_size'],
                                                     threshold=1.5))


def _fails_in_its_evaluation_rounds(est):
  est.train_and_evaluate(
      models.train_input_fn,
      lambda params: models.failing_dataset(params['batch_size'],
                                            threshold=1.5),
      max_steps=12, eval_every_steps=3)


@pytest.mark.timeout(120)
@pytest.mark.parametrize('fail, error', [
    (_fails_at_its_second_loop, HookFailure),
    (_fails_in_its_input, tf.errors.InvalidArgumentError),
    (_fails_in_its_evaluation_rounds, tf.errors.InvalidArgumentError),
], ids=['train-hook', 'evaluate-input', 'train_and_evaluate-input'])
def test_failed_calls_leave_no_thread_behind(tmp_path, fail, error):
  before = _threads()
  for i in range(3):
    est = models.make(tmp_path, name='model%d' % i, iterations_per_loop=4)
    est.train(models.train_input_fn, steps=1)
    with pytest.raises(error):
      fail(est)
  assert _left_behind(before) == []


@pytest.mark.timeout(60)
def test_a_failed_training_has_written_its_events_when_it_returns(
    make_estimator):
  # The throughput hook writes at the end of every loop; the run fails in
  # the second loop's after_run, after that write. Nothing flushes the
  # writer but its closing.
  est = make_estimator(iterations_per_loop=4, log_step_count_steps=1)
  before = _threads()
  with pytest.raises(HookFailure):
    est.train(input_fn, steps=100, hooks=[FailingHook(2)])
  assert _left_behind(before) == []
  assert sorted(read_scalars(est.model_dir)['examples/sec']) == [4, 8]


@pytest.fixture
def uncaught_signals():
  """Stop signals that train() did not catch, recorded rather than ending
  the test run."""
  received = []
  previous = {number: signal.signal(number, lambda n, _: received.append(n))
              for number in signals.STOP_SIGNALS}
  yield received
  for number, handler in previous.items():
    signal.signal(number, handler)


@pytest.mark.timeout(60)
def test_a_signal_stopped_training_leaves_no_thread_and_complete_events(
    make_estimator, uncaught_signals):
  est = make_estimator(iterations_per_loop=4, log_step_count_steps=1)
  before = _threads()
  with pytest.raises(he.TrainingInterrupted):
    est.train(input_fn, steps=1000,
              hooks=[SendSignal(signal.SIGTERM, on_run=3)])
  assert uncaught_signals == []
  assert _left_behind(before) == []
  scalars = read_scalars(est.model_dir)
  assert sorted(scalars['loss']) == list(range(1, 13))
  assert sorted(scalars['examples/sec']) == [4, 8, 12]


@pytest.mark.timeout(60)
def test_two_runs_into_one_model_dir_keep_both_runs_events(make_estimator):
  est = make_estimator(iterations_per_loop=3)
  est.train(input_fn, steps=3)
  est.train(input_fn, steps=3)
  assert sorted(read_scalars(est.model_dir)['loss']) == list(range(1, 7))


def _event_files(logdir):
  return sorted(glob.glob(os.path.join(str(logdir), 'events.out.tfevents*')))


def _summary(tag, value):
  summary = v1.Summary()
  summary.value.add(tag=tag, simple_value=value)
  return summary


def test_writers_opened_in_the_same_second_write_files_of_their_own(tmp_path):
  # An event file's name holds the second it was opened in: without a
  # suffix of their own, the second writer would truncate the first's file.
  for attempt in range(5):
    logdir = tmp_path / str(attempt)
    writers = [event_writer.EventWriter(str(logdir)) for _ in range(2)]
    for index, writer in enumerate(writers):
      writer.add_summary(_summary('value', index), step=index)
    for writer in writers:
      writer.close()
    files = _event_files(logdir)
    seconds = {os.path.basename(path).split('.')[3] for path in files}
    if len(seconds) == 1:
      break
  assert len(files) == 2
  assert read_scalars(logdir)['value'] == {0: 0.0, 1: 1.0}


def test_an_event_writer_creates_no_file_before_its_first_summary(tmp_path):
  writer = event_writer.EventWriter(str(tmp_path / 'logs'))
  before = _threads()
  writer.flush()
  writer.close()
  assert not os.path.exists(str(tmp_path / 'logs'))
  assert _left_behind(before) == []
  # A summary after the end of its run is dropped, not written to a new file.
  writer.add_summary(_summary('late', 1.0), step=1)
  assert not os.path.exists(str(tmp_path / 'logs'))


class SessionReferences(v1.train.SessionRunHook):
  """Keeps a weak reference to every session the run creates."""

  def __init__(self):
    self.references = []

  def after_create_session(self, session, coord):
    self.references.append(weakref.ref(session))


SESSION_CALLS = {
    'train': lambda est, hook: est.train(models.train_input_fn, steps=6,
                                         hooks=[hook]),
    'evaluate': lambda est, hook: est.evaluate(_eval_input_fn, hooks=[hook]),
    'predict': lambda est, hook: list(est.predict(_predict_input_fn,
                                                  hooks=[hook])),
    'train_and_evaluate': lambda est, hook: est.train_and_evaluate(
        models.train_input_fn, _eval_input_fn, max_steps=12,
        eval_every_steps=3, hooks=[hook]),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize('call', sorted(SESSION_CALLS))
def test_the_session_goes_when_the_call_returns(tmp_path, call):
  """The session holds the model's variables, its copies for checkpoints
  and the queues: nothing may keep it until some later garbage
  collection."""
  est = models.trained(tmp_path, steps=3)
  hook = SessionReferences()
  gc.collect()
  gc.disable()  # Only reference counting may free it.
  try:
    SESSION_CALLS[call](est, hook)
    alive = [reference() is not None for reference in hook.references]
  finally:
    gc.enable()
  assert alive == [False]


def _graphs():
  gc.collect()
  return sum(1 for o in gc.get_objects() if isinstance(o, tf.Graph))


@pytest.mark.timeout(120)
def test_repeated_calls_keep_no_graph_alive(tmp_path):
  est = models.trained(tmp_path, steps=3)
  before = _graphs()
  for _ in range(3):
    est.train(models.train_input_fn, steps=3)
    est.evaluate(_eval_input_fn)
    list(est.predict(_predict_input_fn))
  assert _graphs() == before


@pytest.fixture
def clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


@pytest.mark.timeout(240)
@pytest.mark.usefixtures('clean_gin')
def test_the_command_leaves_no_thread_behind(tmp_path):
  before = _threads()
  for mode in ('train', 'evaluate', 'predict'):
    gin.clear_config()
    assert main_lib.main([
        mode, '--model_dir=%s' % tmp_path, '--gin_file=runs/digits_mlp.gin',
        '--gin_param=TRAIN_STEPS = 20',
        '--gin_param=RunConfig.iterations_per_loop = 10']) == 0
  assert _left_behind(before) == []
  assert framework_threads() == []
