"""SIGTERM and SIGINT during train(): a clean stop at the loop boundary, the
previous handlers back afterwards, nothing installed off the main thread.

Each test installs recording handlers first, so that a signal that
train() failed to catch is recorded instead of ending the test run. (The
exit codes of a real process are checked in tests/faults.)
"""
import os
import signal
import threading

import pytest
import tensorflow as tf

import hookestimator as he
from hookestimator import signals
from tests.conftest import framework_threads, input_fn

v1 = tf.compat.v1


@pytest.fixture
def recorded():
  """Recording handlers for SIGTERM and SIGINT during the test."""
  received = []

  def record(number, unused_frame):
    received.append(number)
  previous = {n: signal.signal(n, record) for n in signals.STOP_SIGNALS}
  yield received, record
  for number, handler in previous.items():
    signal.signal(number, handler)


class SendSignal(v1.train.SessionRunHook):
  """Sends `signal_number` to this process before loop `on_run` runs."""

  def __init__(self, signal_number, on_run, twice=False):
    self._signal_number = signal_number
    self._on_run = on_run
    self._twice = twice
    self.runs = 0

  def before_run(self, run_context):
    self.runs += 1
    if self.runs == self._on_run:
      os.kill(os.getpid(), self._signal_number)
      if self._twice:
        os.kill(os.getpid(), self._signal_number)


@pytest.mark.timeout(60)
@pytest.mark.parametrize('signal_number', [signal.SIGTERM, signal.SIGINT],
                         ids=['SIGTERM', 'SIGINT'])
def test_signal_stops_after_the_loop_saves_and_restores_handlers(
    make_estimator, recorded, signal_number):
  received, record = recorded
  est = make_estimator(iterations_per_loop=4, save_checkpoints_steps=1000)
  sender = SendSignal(signal_number, on_run=3)
  with pytest.raises(he.TrainingInterrupted) as info:
    est.train(input_fn, steps=1000, hooks=[sender])
  stop = info.value
  assert isinstance(stop, SystemExit)
  assert stop.code == 128 + signal_number
  assert (stop.signal_number, stop.step) == (signal_number, 12)
  assert stop.checkpoint == est.latest_checkpoint()
  assert est.latest_checkpoint().endswith('model.ckpt-12')
  assert 'stopped by %s at step 12' % signal.Signals(signal_number).name in (
      str(stop))
  assert sender.runs == 3 and received == []
  assert all(signal.getsignal(n) is record for n in signals.STOP_SIGNALS)
  assert framework_threads() == []


@pytest.mark.timeout(60)
def test_a_second_signal_goes_to_the_previous_handler(make_estimator,
                                                      recorded):
  received, _ = recorded
  est = make_estimator(iterations_per_loop=4)
  with pytest.raises(he.TrainingInterrupted):
    est.train(input_fn, steps=1000,
              hooks=[SendSignal(signal.SIGTERM, on_run=2, twice=True)])
  assert received == [signal.SIGTERM]


@pytest.mark.timeout(60)
def test_handlers_are_restored_after_an_error(make_estimator, recorded):
  _, record = recorded

  class Fail(v1.train.SessionRunHook):

    def after_run(self, run_context, run_values):
      raise RuntimeError('hook failed')
  with pytest.raises(RuntimeError, match='hook failed'):
    make_estimator().train(input_fn, steps=10, hooks=[Fail()])
  assert all(signal.getsignal(n) is record for n in signals.STOP_SIGNALS)


@pytest.mark.timeout(60)
def test_train_off_the_main_thread_installs_nothing(make_estimator, recorded):
  _, record = recorded
  seen = {}

  class Look(v1.train.SessionRunHook):

    def after_run(self, run_context, run_values):
      seen['handlers'] = [signal.getsignal(n) for n in signals.STOP_SIGNALS]

  est = make_estimator(iterations_per_loop=2)
  errors = []

  def train():
    try:
      est.train(input_fn, steps=4, hooks=[Look()])
    except BaseException as error:  # pylint: disable=broad-except
      errors.append(error)
  thread = threading.Thread(target=train)
  thread.start()
  thread.join(60)
  assert not thread.is_alive() and errors == []
  assert seen['handlers'] == [record, record]
  assert est.get_variable_value('global_step') == 4


def test_ignored_signals_stay_ignored(recorded):
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  with signals.SignalStop():
    assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    assert signal.getsignal(signal.SIGTERM) != recorded[1]
  assert signal.getsignal(signal.SIGTERM) is recorded[1]
