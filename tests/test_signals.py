"""SIGTERM and SIGINT during train(): a clean stop at the loop boundary, the
previous handlers back afterwards, nothing installed off the main thread.

Each test installs recording handlers first, so that a signal that
train() failed to catch is recorded instead of ending the test run. (The
exit codes of a real process are checked in tests/faults.)
"""
import os
import signal
import sys
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


def _call_between_bytecodes(function, code_name, action):
  """Runs `function()` with `action()` called before every line and
  bytecode of the frames running code `code_name` of signals.py: what a
  signal arriving there would run. Tracing is per thread, so only this
  thread is traced. (Python 3.12 starts tracing bytecodes only after the
  frame's first line event.)"""

  def local(frame, event, unused_arg):
    if event in ('line', 'opcode'):
      frame.f_trace_opcodes = True
      action()
    return local

  def start(frame, event, unused_arg):
    if (frame.f_code.co_name == code_name and
        frame.f_code.co_filename == signals.__file__):
      frame.f_trace_opcodes = True
      return local
    return None
  sys.settrace(start)
  try:
    return function()
  finally:
    sys.settrace(None)


@pytest.mark.timeout(30)
@pytest.mark.parametrize('signal_number', [signal.SIGTERM, signal.SIGINT],
                         ids=['SIGTERM', 'SIGINT'])
def test_a_signal_while_the_stop_is_read_does_not_block(signal_number):
  # Python runs handlers between bytecodes on the main thread, possibly in
  # the middle of the main thread reading signal_number. The handler is
  # called there, before each bytecode of the read, on a thread of its own
  # so that a handler blocking on something the read holds is seen
  # (and not waited for).
  stop = signals.SignalStop()
  read = []
  thread = threading.Thread(
      target=lambda: read.append(_call_between_bytecodes(
          lambda: stop.signal_number, 'signal_number',
          lambda: stop._handle(signal_number, None))),
      name='ReadWhileSignalled', daemon=True)
  thread.start()
  thread.join(10)
  assert not thread.is_alive(), 'the handler blocked inside signal_number'
  assert read == [signal_number]


@pytest.mark.timeout(30)
@pytest.mark.parametrize('when', ['before', 'after'])
def test_a_signal_while_the_handlers_go_in_leaves_the_previous_ones(
    monkeypatch, recorded, when):
  # The first signal lands while __enter__ installs the handlers, just
  # before or just after the first of them goes in: after it, a second
  # signal of either kind must find the previous handlers.
  _, record = recorded
  stop = signals.SignalStop()
  install = signal.signal
  landed = []

  def install_with_a_signal(number, handler):
    if handler == stop._handle and not landed:
      landed.append(number)
      if when == 'before':
        stop._handle(number, None)
        return install(number, handler)
      previous = install(number, handler)
      signal.getsignal(number)(number, None)
      return previous
    return install(number, handler)
  monkeypatch.setattr(signal, 'signal', install_with_a_signal)
  with stop:
    assert stop.signal_number == landed[0]
    assert all(signal.getsignal(n) is record for n in signals.STOP_SIGNALS)
  assert all(signal.getsignal(n) is record for n in signals.STOP_SIGNALS)


def test_handlers_are_installed_and_put_back(recorded):
  _, record = recorded
  with signals.SignalStop() as stop:
    assert all(signal.getsignal(n) == stop._handle
               for n in signals.STOP_SIGNALS)
    os.kill(os.getpid(), signal.SIGTERM)
    assert stop.signal_number == signal.SIGTERM
    assert all(signal.getsignal(n) is record for n in signals.STOP_SIGNALS)
  assert all(signal.getsignal(n) is record for n in signals.STOP_SIGNALS)


@pytest.mark.parametrize('signal_number', [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_the_graph_is_built_stops_before_the_first_loop(
    make_estimator, recorded, signal_number):
  # The handlers are in from the start of the build: a signal landing while
  # input_fn runs (or TensorFlow traces its dataset functions) is recorded,
  # not raised into the middle of TensorFlow's code.
  received, record = recorded
  est = make_estimator(iterations_per_loop=4, save_checkpoints_steps=1000)

  def signalling_input_fn(params):
    os.kill(os.getpid(), signal_number)
    return input_fn(params)
  with pytest.raises(he.TrainingInterrupted) as info:
    est.train(signalling_input_fn, steps=1000)
  stop = info.value
  assert stop.code == 128 + signal_number
  assert (stop.signal_number, stop.step) == (signal_number, 0)
  assert received == []
  assert all(signal.getsignal(n) is record for n in signals.STOP_SIGNALS)
  assert framework_threads() == []
