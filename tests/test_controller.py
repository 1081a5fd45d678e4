"""Tests of hookestimator.controller: the Controller thread and ErrorRendezvous.

Every thread test waits on Events or queues with a timeout, never on a sleep,
and asserts that the thread it started has ended.
"""
import queue
import threading

import pytest
import tensorflow as tf

from hookestimator.controller import Controller
from hookestimator.controller import ErrorRendezvous

# Generous: only reached when the code under test is broken.
TIMEOUT = 10.0


class BatchError(Exception):
  """An error type no library raises, so that its identity can be checked."""


@pytest.fixture
def rendezvous():
  return ErrorRendezvous()


def _recorder():
  """A work fn that puts each count in a queue, and the queue."""
  done = queue.Queue()

  def work(count):
    done.put((count, threading.current_thread().name,
              threading.current_thread().daemon))

  return work, done


def _drain(done):
  items = []
  while True:
    try:
      items.append(done.get_nowait())
    except queue.Empty:
      return items


def _error_recorded(rendezvous):
  """An Event set when `rendezvous` records its first error."""
  recorded = threading.Event()
  rendezvous.on_error(recorded.set)
  return recorded


def test_runs_work_for_each_count_in_order_on_a_named_daemon_thread(
    rendezvous):
  work, done = _recorder()
  controller = Controller('CountingController', work, rendezvous).start()
  for count in (4, 4, 2, 1):
    controller.signal(count)
  controller.join(TIMEOUT)

  assert not controller.is_alive()
  assert [item[0] for item in _drain(done)] == [4, 4, 2, 1]
  assert rendezvous.error is None


def test_work_runs_on_the_controller_thread_not_the_caller(rendezvous):
  work, done = _recorder()
  controller = Controller('NamedController', work, rendezvous).start()
  controller.signal(3)
  count, thread_name, daemon = done.get(timeout=TIMEOUT)
  controller.join(TIMEOUT)

  assert (count, thread_name, daemon) == (3, 'NamedController', True)
  assert not controller.is_alive()


def test_stop_lets_signalled_work_finish_before_the_thread_ends(rendezvous):
  started = threading.Event()
  release = threading.Event()
  counts = []

  def work(count):
    if not counts:
      started.set()
      assert release.wait(TIMEOUT)
    counts.append(count)

  controller = Controller('SlowController', work, rendezvous).start()
  try:
    for count in (5, 6, 7):
      controller.signal(count)
    assert started.wait(TIMEOUT)
    controller.stop()
    # Still busy with the first count: stop() must not have cut it short.
    assert controller.is_alive()
  finally:
    release.set()
  controller.join(TIMEOUT)

  assert not controller.is_alive()
  assert counts == [5, 6, 7]
  assert rendezvous.error is None


def test_the_thread_ends_at_stop_without_any_work(rendezvous):
  work, done = _recorder()
  controller = Controller('IdleController', work, rendezvous).start()
  controller.stop()
  controller.join(TIMEOUT)

  assert not controller.is_alive()
  assert _drain(done) == []


def test_join_raises_naming_the_thread_when_it_does_not_end_in_time(
    rendezvous):
  started = threading.Event()
  release = threading.Event()

  def work(unused_count):
    started.set()
    release.wait(TIMEOUT)

  controller = Controller('BlockedController', work, rendezvous).start()
  try:
    controller.signal(1)
    assert started.wait(TIMEOUT)
    with pytest.raises(RuntimeError, match='BlockedController'):
      controller.join(0.05)
    assert controller.is_alive()
  finally:
    release.set()
  controller.join(TIMEOUT)

  assert not controller.is_alive()
  assert rendezvous.error is None


def test_join_of_a_controller_never_started_returns(rendezvous):
  work, done = _recorder()
  controller = Controller('UnstartedController', work, rendezvous)
  controller.join(TIMEOUT)

  assert not controller.is_alive()
  assert _drain(done) == []


def test_an_error_in_work_reaches_the_rendezvous_and_ends_the_thread(
    rendezvous):
  counts = []

  def work(count):
    if count == 2:
      raise BatchError('bad record in batch %d' % count)
    counts.append(count)

  recorded = _error_recorded(rendezvous)
  controller = Controller('FailingController', work, rendezvous).start()
  controller.signal(1)
  controller.signal(2)
  controller.signal(3)  # never run: the thread ended at the error
  assert recorded.wait(TIMEOUT)
  error = rendezvous.error
  controller.join(TIMEOUT)

  assert not controller.is_alive()
  assert type(error) is BatchError  # pylint: disable=unidiomatic-typecheck
  assert str(error) == 'bad record in batch 2'
  assert rendezvous.source == 'FailingController'
  assert counts == [1]
  with pytest.raises(BatchError, match='bad record in batch 2') as raised:
    rendezvous.raise_if_error()
  assert raised.value is error


def test_a_cancelled_error_in_work_is_a_quiet_shutdown(rendezvous):
  callbacks = []
  rendezvous.on_error(lambda: callbacks.append('called'))
  counts = []

  def work(count):
    counts.append(count)
    if count == 2:
      raise tf.errors.CancelledError(None, None, 'Queue is closed')

  controller = Controller('CancelledController', work, rendezvous).start()
  for count in (1, 2, 3):
    controller.signal(count)
  controller.join(TIMEOUT)

  assert not controller.is_alive()
  # The thread stopped at the cancellation, and recorded nothing.
  assert counts == [1, 2]
  assert rendezvous.error is None
  assert rendezvous.source is None
  assert callbacks == []
  rendezvous.raise_if_error()


def test_signal_after_stop_raises_naming_the_controller(rendezvous):
  work, done = _recorder()
  controller = Controller('StoppedController', work, rendezvous).start()
  controller.stop()
  with pytest.raises(RuntimeError, match='StoppedController'):
    controller.signal(4)
  controller.join(TIMEOUT)

  assert not controller.is_alive()
  assert _drain(done) == []
  with pytest.raises(RuntimeError, match='StoppedController'):
    controller.signal(4)


def test_rendezvous_keeps_only_the_first_error():
  rendezvous = ErrorRendezvous()
  first = BatchError('first')
  second = ValueError('second')

  assert rendezvous.error is None
  assert rendezvous.record('InfeedController', first) is True
  assert rendezvous.record('OutfeedController', second) is False

  assert rendezvous.error is first
  assert rendezvous.source == 'InfeedController'


def test_rendezvous_calls_each_callback_exactly_once():
  rendezvous = ErrorRendezvous()
  calls = []
  rendezvous.on_error(lambda: calls.append('first'))
  rendezvous.on_error(lambda: calls.append('second'))

  assert calls == []
  rendezvous.record('a', BatchError('one'))
  rendezvous.record('b', BatchError('two'))
  rendezvous.record('c', BatchError('three'))

  assert calls == ['first', 'second']


def test_a_failing_callback_does_not_stop_the_others():
  rendezvous = ErrorRendezvous()
  calls = []

  def broken():
    calls.append('broken')
    raise OSError('cannot close the queue')

  rendezvous.on_error(broken)
  rendezvous.on_error(lambda: calls.append('after'))
  error = BatchError('original')

  assert rendezvous.record('InfeedController', error) is True
  assert calls == ['broken', 'after']
  assert rendezvous.error is error


def test_raise_if_error_reraises_the_same_exception_object():
  rendezvous = ErrorRendezvous()
  rendezvous.raise_if_error()  # nothing recorded: no raise
  error = BatchError('lost a batch')
  rendezvous.record('InfeedController', error)

  for _ in range(2):
    with pytest.raises(BatchError) as raised:
      rendezvous.raise_if_error()
    assert raised.value is error
    assert str(raised.value) == 'lost a batch'


def test_concurrent_records_keep_one_error_and_call_back_once():
  rendezvous = ErrorRendezvous()
  calls = queue.Queue()
  rendezvous.on_error(lambda: calls.put(threading.current_thread().name))
  workers = 8
  barrier = threading.Barrier(workers, timeout=TIMEOUT)
  firsts = queue.Queue()
  errors = [BatchError('from thread %d' % i) for i in range(workers)]

  def record(index):
    barrier.wait()
    if rendezvous.record('thread %d' % index, errors[index]):
      firsts.put(index)

  threads = [threading.Thread(target=record, args=(i,), name='recorder%d' % i)
             for i in range(workers)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join(TIMEOUT)

  assert not any(thread.is_alive() for thread in threads)
  winners = _drain(firsts)
  assert len(winners) == 1
  assert rendezvous.error is errors[winners[0]]
  assert rendezvous.source == 'thread %d' % winners[0]
  assert _drain(calls) == ['recorder%d' % winners[0]]
