"""Tests of the framework's SessionRunHooks, driven through their public calls.

The hooks run on tiny CPU graphs (a resource global step that a "device
loop" advances by the fed loop size) or against small fakes of the
session, the feeding objects, the clock and the summary writer. A helper
plays MonitoredSession's part: before_run, one session.run of the merged
fetches and feeds, after_run.
"""
import logging
import os
import threading

import pytest
import tensorflow as tf

from hookestimator import devices
from hookestimator import hooks as hooks_lib
from hookestimator import loop as loop_lib
from hookestimator.checkpoint import CheckpointHook
from hookestimator.compat import v1
from hookestimator.controller import ErrorRendezvous

# Generous: only reached when the code under test is broken.
TIMEOUT = 10.0
CONTROLLER_NAMES = ('InfeedController', 'OutfeedController')


class FeedError(Exception):
  """An error type no library raises, so that its identity can be checked."""


def _controller_threads():
  return [t for t in threading.enumerate() if t.name in CONTROLLER_NAMES]


@pytest.fixture(autouse=True)
def no_controller_threads_left():
  assert _controller_threads() == []
  yield
  assert _controller_threads() == []


class StepGraph(object):
  """A graph whose "device loop" advances the global step by the fed size.

  `global_step_after` is the step once the loop ran; `stalled_step` reads
  the step without advancing it (a train_op that forgot the global step).
  """

  def __init__(self):
    self.graph = tf.Graph()
    with self.graph.as_default():
      self.global_step = loop_lib.create_global_step(self.graph)
      self.iterations = v1.placeholder(tf.int32, [], name='iterations')
      advance = self.global_step.assign_add(
          tf.cast(self.iterations, tf.int64))
      with tf.control_dependencies([advance]):
        self.global_step_after = self.global_step.read_value()
      self.stalled_step = self.global_step.read_value()
      self.last_loss = tf.constant(0.25, name='last_loss')
      self.new_step = v1.placeholder(tf.int64, [], name='new_step')
      self.set_step = self.global_step.assign(self.new_step)
      self.init = v1.global_variables_initializer()

  def session(self, start_step=0):
    session = v1.Session(graph=self.graph)
    session.run(self.init)
    session.run(self.set_step, {self.new_step: start_step})
    return session


def _run_context(session):
  return v1.train.SessionRunContext(
      original_args=v1.train.SessionRunArgs(None), session=session)


def _run_values(results):
  return v1.train.SessionRunValues(results=results, options=None,
                                   run_metadata=None)


def run_one_loop(session, hooks, feed_dict=None):
  """One MonitoredSession.run with `hooks`; returns the run context and the
  SessionRunArgs each hook asked for."""
  context = _run_context(session)
  all_args = [hook.before_run(context) for hook in hooks]
  fetches = [args.fetches if args is not None else [] for args in all_args]
  feeds = dict(feed_dict or {})
  for args in all_args:
    if args is not None and args.feed_dict:
      feeds.update(args.feed_dict)
  results = session.run(fetches, feeds)
  for hook, result in zip(hooks, results):
    hook.after_run(context, _run_values(result))
  return context, all_args


def _loop_size_hook(graph, loop_state, step_tensor=None, **kwargs):
  kwargs.setdefault('iterations_per_loop', 4)
  with graph.graph.as_default():
    hook = hooks_lib.LoopSizeHook(
        loop_state, iterations_tensor=graph.iterations,
        global_step_after=(step_tensor if step_tensor is not None else
                           graph.global_step_after),
        **kwargs)
    hook.begin()
  return hook


def drive_loop_size_hook(start_step, max_loops=20, **kwargs):
  """Runs loops until the hook stops them; returns (sizes, steps, hook)."""
  graph = StepGraph()
  loop_state = loop_lib.LoopState()
  hook = _loop_size_hook(graph, loop_state, **kwargs)
  sizes, steps = [], []
  with graph.session(start_step) as session:
    coord = v1.train.Coordinator()
    hook.after_create_session(session, coord)
    assert not coord.should_stop()
    for _ in range(max_loops):
      size = loop_state.iterations
      context, (args,) = run_one_loop(session, [hook])
      assert args.feed_dict == {graph.iterations: size}
      sizes.append(size)
      steps.append(int(session.run(graph.global_step)))
      if context.stop_requested:
        break
  return sizes, steps, hook


# LoopSizeHook


def test_loop_size_hook_sizes_loops_4_4_2_from_step_0():
  sizes, steps, hook = drive_loop_size_hook(0, num_steps=10)

  assert hook.final_step == 10
  assert sizes == [4, 4, 2]
  assert steps == [4, 8, 10]


def test_loop_size_hook_counts_num_steps_from_the_starting_step():
  sizes, steps, hook = drive_loop_size_hook(3, num_steps=10)

  assert hook.final_step == 13
  assert sizes == [4, 4, 2]
  assert steps == [7, 11, 13]


def test_loop_size_hook_stops_at_last_step():
  sizes, steps, hook = drive_loop_size_hook(3, last_step=10)

  assert hook.final_step == 10
  assert sizes == [4, 3]
  assert steps == [7, 10]


def test_loop_size_hook_without_a_final_step_runs_full_loops():
  sizes, steps, _ = drive_loop_size_hook(0, max_loops=3,
                                         iterations_per_loop=5)

  assert sizes == [5, 5, 5]
  assert steps == [5, 10, 15]


def test_loop_size_hook_feeds_the_size_and_shares_it_through_loop_state():
  graph = StepGraph()
  loop_state = loop_lib.LoopState()
  hook = _loop_size_hook(graph, loop_state, num_steps=6)
  with graph.session(0) as session:
    hook.after_create_session(session, v1.train.Coordinator())
    assert loop_state.iterations == 4
    args = hook.before_run(_run_context(session))
    assert args.feed_dict == {graph.iterations: 4}
    assert int(session.run(args.fetches, args.feed_dict)) == 4
    hook.after_run(_run_context(session), _run_values(4))
    assert loop_state.iterations == 2
    assert hook.before_run(_run_context(session)).feed_dict == {
        graph.iterations: 2}


@pytest.mark.parametrize('start_step', [10, 12])
def test_loop_size_hook_at_or_past_last_step_stops_before_any_loop(
    start_step):
  graph = StepGraph()
  hook = _loop_size_hook(graph, loop_lib.LoopState(), last_step=10)
  with graph.session(start_step) as session:
    coord = v1.train.Coordinator()
    hook.after_create_session(session, coord)

    assert coord.should_stop()


def test_loop_size_hook_in_a_monitored_session():
  graph = StepGraph()
  loop_state = loop_lib.LoopState()
  hook = _loop_size_hook(graph, loop_state, num_steps=10)
  runs = []
  with graph.graph.as_default():
    with v1.train.MonitoredSession(hooks=[hook]) as session:
      while not session.should_stop():
        runs.append(session.run([graph.iterations, graph.global_step_after]))

  assert [[int(v) for v in run] for run in runs] == [[4, 4], [4, 8], [2, 10]]


def test_loop_size_hook_raises_when_the_global_step_did_not_advance():
  graph = StepGraph()
  loop_state = loop_lib.LoopState()
  hook = _loop_size_hook(graph, loop_state, step_tensor=graph.stalled_step,
                         num_steps=10)
  with graph.session(2) as session:
    hook.after_create_session(session, v1.train.Coordinator())
    with pytest.raises(RuntimeError, match='did not advance'):
      run_one_loop(session, [hook])


def test_loop_size_hook_needs_a_global_step():
  with tf.Graph().as_default():
    iterations = v1.placeholder(tf.int32, [])
    hook = hooks_lib.LoopSizeHook(loop_lib.LoopState(), 4, iterations,
                                  tf.constant(0, tf.int64), num_steps=10)
    with pytest.raises(RuntimeError, match='global step'):
      hook.begin()


def test_loop_size_hook_keeps_its_final_step_when_the_session_is_recreated():
  graph = StepGraph()
  loop_state = loop_lib.LoopState()
  hook = _loop_size_hook(graph, loop_state, num_steps=10)
  with graph.session(0) as session:
    hook.after_create_session(session, v1.train.Coordinator())
    run_one_loop(session, [hook])
    run_one_loop(session, [hook])
    # The session is recreated from a checkpoint taken at step 4.
    session.run(graph.set_step, {graph.new_step: 4})
    hook.after_create_session(session, v1.train.Coordinator())

    assert hook.final_step == 10
    assert loop_state.iterations == 4


def test_loop_size_hook_sizes_loops_by_time_with_a_step_time_sizer():
  """TPUConfig(iterations_per_loop='10s'): steps take 0.5 s on a fake
  clock (read from the global step), and the first loop 3 s more (the
  first run's start-up); the loops grow from one step to 20 (10 s)."""
  graph = StepGraph()
  loop_state = loop_lib.LoopState()
  sizes, seconds = [], []
  with graph.session(0) as session:
    def clock():
      step = int(session.run(graph.global_step))
      return 0.5 * step + (3.0 if step else 0.0)
    sizer = hooks_lib.StepTimeSizer(10, clock=clock)
    hook = _loop_size_hook(graph, loop_state, num_steps=600, sizer=sizer)
    coord = v1.train.Coordinator()
    hook.after_create_session(session, coord)
    while not coord.should_stop():
      sizes.append(loop_state.iterations)
      before = clock()
      context, _ = run_one_loop(session, [hook])
      seconds.append(clock() - before)
      if context.stop_requested:
        break
    assert int(session.run(graph.global_step)) == 600

  assert sizes[0] == 1
  assert sum(sizes) == 600
  # Within 20 % of 10 s from the 5th loop on; exactly 10 s once the
  # start-up is out of the last 20 loops the sizer averages over.
  assert all(8.0 <= s <= 12.0 for s in seconds[4:-1]), seconds
  assert sizes[21:-1] == [20] * len(sizes[21:-1])
  assert sizes[-1] <= 20


def test_step_time_sizer_without_measurable_time_grows_and_never_stalls():
  now = [0.0]
  sizer = hooks_lib.StepTimeSizer(300, first_size=2, clock=lambda: now[0])
  assert sizer.next_size() == 2
  sizer.loop_started()
  sizer.loop_ended(2)  # No time passed.
  assert sizer.next_size() == 4
  sizer.loop_started()
  now[0] += 10000.0  # One very slow loop: one step, not zero.
  sizer.loop_ended(4)
  assert sizer.next_size() == 1
  with pytest.raises(ValueError, match='target_seconds.*0'):
    hooks_lib.StepTimeSizer(0)


@pytest.mark.parametrize('kwargs, error, pattern', [
    (dict(num_steps=5, last_step=7), ValueError, r'not both.*5.*7'),
    (dict(num_steps=0), ValueError, r'num_steps.*\b0\b'),
    (dict(num_steps=-3), ValueError, r'num_steps.*-3'),
    (dict(last_step=0), ValueError, r'last_step.*\b0\b'),
    (dict(last_step=-1), ValueError, r'last_step.*-1'),
    (dict(iterations_per_loop=0, num_steps=5), ValueError,
     r'iterations_per_loop.*\b0\b'),
    (dict(num_steps=2.5), TypeError, r'num_steps.*2\.5'),
    (dict(num_steps=True), TypeError, r'num_steps.*True'),
    (dict(iterations_per_loop='4', num_steps=5), TypeError,
     r"iterations_per_loop.*'4'"),
])
def test_loop_size_hook_rejects_bad_arguments(kwargs, error, pattern):
  kwargs.setdefault('iterations_per_loop', 4)
  with tf.Graph().as_default():
    iterations = v1.placeholder(tf.int32, [])
    with pytest.raises(error, match=pattern):
      hooks_lib.LoopSizeHook(loop_lib.LoopState(),
                             iterations_tensor=iterations,
                             global_step_after=tf.constant(0, tf.int64),
                             **kwargs)


# InfeedOutfeedHook


class FakeSession(object):
  """Records what is run; session.run is called from several threads."""

  def __init__(self):
    self._lock = threading.Lock()
    self._runs = []

  def run(self, fetches, feed_dict=None):
    with self._lock:
      self._runs.append(fetches)

  @property
  def runs(self):
    with self._lock:
      return list(self._runs)


class FakeInfeed(object):
  """run_loop records each count and its thread; raises `error` on loop
  number `fail_on_loop` (counted from 1)."""

  feeds_from_thread = True

  def __init__(self, fail_on_loop=None, error=None):
    self.input_ended = False
    self.counts = []
    self.threads = set()
    self.sessions = set()
    self._fail_on_loop = fail_on_loop
    self._error = error
    self._loops = 0

  def run_loop(self, session, count):
    self._loops += 1
    self.threads.add(threading.current_thread().name)
    self.sessions.add(id(session))
    if self._loops == self._fail_on_loop:
      raise self._error
    self.counts.append(count)
    return True


class FakeReader(FakeInfeed):
  """read_loop records like FakeInfeed; flush records what was done then."""

  def __init__(self, fail_on_loop=None, error=None):
    super(FakeReader, self).__init__(fail_on_loop, error)
    self.flushes = []

  def read_loop(self, session, count):
    self.run_loop(session, count)
    return count

  def flush(self, session):
    self.flushes.append((id(session), list(self.counts),
                         len(_controller_threads())))


def _feeding_hook(loop_state, infeed, reader, rendezvous=None, **kwargs):
  kwargs.setdefault('join_timeout', TIMEOUT)
  return hooks_lib.InfeedOutfeedHook(
      loop_state, infeed, reader,
      rendezvous if rendezvous is not None else ErrorRendezvous(), **kwargs)


def _signal_loops(hook, loop_state, sizes):
  for size in sizes:
    loop_state.iterations = size
    hook.before_run(_run_context(None))


def test_feeding_hook_signals_both_controllers_in_order_and_joins_at_end():
  loop_state = loop_lib.LoopState()
  infeed, reader = FakeInfeed(), FakeReader()
  session = FakeSession()
  hook = _feeding_hook(loop_state, infeed, reader,
                       drain_ops=['drain infeed', 'drain outfeed'],
                       cancel_ops=['cancel'])
  hook.after_create_session(session, v1.train.Coordinator())
  try:
    assert sorted(t.name for t in _controller_threads()) == sorted(
        CONTROLLER_NAMES)
    _signal_loops(hook, loop_state, [4, 4, 2])
  finally:
    hook.end(session)

  assert _controller_threads() == []
  assert infeed.counts == [4, 4, 2]
  assert reader.counts == [4, 4, 2]
  assert infeed.threads == {'InfeedController'}
  assert reader.threads == {'OutfeedController'}
  assert infeed.sessions == reader.sessions == {id(session)}
  # The drain ops ran once, the cancel ops never; flush came after the
  # threads had done all their work and ended.
  assert session.runs == [['drain infeed', 'drain outfeed']]
  assert reader.flushes == [(id(session), [4, 4, 2], 0)]


class InLoopFakeInfeed(FakeInfeed):
  """An infeed the device loop reads itself: no thread may run it."""

  feeds_from_thread = False


@pytest.mark.parametrize('last_loop_finished', [True, False])
def test_feeding_hook_starts_no_infeed_thread_for_an_in_loop_infeed(
    last_loop_finished):
  loop_state = loop_lib.LoopState()
  infeed, reader = InLoopFakeInfeed(), FakeReader()
  session = FakeSession()
  hook = _feeding_hook(loop_state, infeed, reader, drain_ops=['drain'])
  hook.after_create_session(session, v1.train.Coordinator())
  try:
    assert [t.name for t in _controller_threads()] == ['OutfeedController']
    for size in [4, 4, 2]:
      loop_state.iterations = size
      hook.before_run(_run_context(None))
      if size != 2 or last_loop_finished:
        hook.after_run(_run_context(None), None)
  finally:
    hook.end(session)
  assert _controller_threads() == []
  assert infeed.counts == []
  assert reader.counts == [4, 4, 2]
  # A loop that ended the run unfinished met the end of its input.
  assert infeed.input_ended is not last_loop_finished


def test_feeding_hook_reads_the_outfeed_in_batches_of_steps():
  loop_state = loop_lib.LoopState()
  infeed, reader = FakeInfeed(), FakeReader()
  session = FakeSession()
  hook = _feeding_hook(loop_state, infeed, reader, drain_ops=['drain'],
                       outfeed_batch_steps=8)
  hook.after_create_session(session, v1.train.Coordinator())
  try:
    _signal_loops(hook, loop_state, [1] * 10 + [3, 3, 12, 1])
  finally:
    hook.end(session)
  assert infeed.counts == [1] * 10 + [3, 3, 12, 1]
  # Read once 8 steps are waiting, and what is left at the end.
  assert reader.counts == [8, 8, 12, 1]
  assert reader.flushes == [(id(session), [8, 8, 12, 1], 0)]
  assert _controller_threads() == []


def test_feeding_hook_rejects_a_bad_outfeed_batch():
  with pytest.raises(ValueError, match='outfeed_batch_steps.*0'):
    _feeding_hook(loop_lib.LoopState(), FakeInfeed(), FakeReader(),
                  outfeed_batch_steps=0)


class ClosableSession(FakeSession):

  def __init__(self):
    super(ClosableSession, self).__init__()
    self.closed = threading.Event()

  def close(self):
    self.closed.set()


def test_feeding_hook_without_cancel_ops_closes_the_session_on_an_error():
  """Hardware feeds (TPU) cannot be closed: the session is, which cancels
  the device run blocked on them."""
  loop_state = loop_lib.LoopState()
  error = FeedError('input broke')
  infeed, reader = FakeInfeed(fail_on_loop=1, error=error), FakeReader()
  session = ClosableSession()
  rendezvous = ErrorRendezvous()
  hook = _feeding_hook(loop_state, infeed, reader, rendezvous, cancel_ops=None)
  hook.after_create_session(session, v1.train.Coordinator())
  try:
    _signal_loops(hook, loop_state, [4])
    assert session.closed.wait(TIMEOUT)
  finally:
    with pytest.raises(FeedError, match='input broke'):
      hook.end(session)
  assert _controller_threads() == []
  assert session.runs == []


def test_feeding_hook_end_reraises_an_infeed_error_and_joins():
  loop_state = loop_lib.LoopState()
  error = FeedError('bad record in batch 6')
  infeed, reader = FakeInfeed(fail_on_loop=2, error=error), FakeReader()
  session = FakeSession()
  rendezvous = ErrorRendezvous()
  hook = _feeding_hook(loop_state, infeed, reader, rendezvous,
                       drain_ops=['drain'], cancel_ops=['cancel'])
  hook.after_create_session(session, v1.train.Coordinator())
  try:
    _signal_loops(hook, loop_state, [4, 4, 2])
  finally:
    with pytest.raises(FeedError, match='bad record in batch 6') as raised:
      hook.end(session)

  assert raised.value is error
  assert _controller_threads() == []
  assert infeed.counts == [4]  # the infeed thread ended at its error
  assert rendezvous.source == 'InfeedController'
  # The error closed the queues at once, from the failing thread.
  assert session.runs.count(['cancel']) == 1


def test_feeding_hook_abort_cancels_blocked_queue_ops_and_joins():
  with tf.Graph().as_default():
    full = v1.FIFOQueue(1, [tf.int32], shapes=[[]], name='full')
    fill = full.enqueue(0)
    enqueue = full.enqueue(1)
    empty = v1.FIFOQueue(1, [tf.int32], shapes=[[]], name='empty')
    dequeue = empty.dequeue()
    cancel_ops = [full.close(cancel_pending_enqueues=True),
                  empty.close(cancel_pending_enqueues=True)]
    started = {'infeed': threading.Event(), 'outfeed': threading.Event()}
    seen = {'infeed': [], 'outfeed': []}

    class BlockedInfeed(object):

      feeds_from_thread = True

      def run_loop(self, session, count):
        started['infeed'].set()
        try:
          session.run(enqueue)  # the queue is full: blocks until cancelled
        except tf.errors.CancelledError as error:
          seen['infeed'].append(type(error))
          raise

    class BlockedReader(object):

      def read_loop(self, session, count):
        started['outfeed'].set()
        try:
          session.run(dequeue)  # the queue is empty: blocks until closed
        except tf.errors.OutOfRangeError as error:
          seen['outfeed'].append(type(error))
          return 0

      def flush(self, session):
        raise AssertionError('abort must not flush')

    loop_state = loop_lib.LoopState()
    rendezvous = ErrorRendezvous()
    with v1.Session() as session:
      session.run(fill)
      hook = _feeding_hook(loop_state, BlockedInfeed(), BlockedReader(),
                           rendezvous, cancel_ops=cancel_ops)
      hook.after_create_session(session, v1.train.Coordinator())
      try:
        _signal_loops(hook, loop_state, [3])
        assert started['infeed'].wait(TIMEOUT)
        assert started['outfeed'].wait(TIMEOUT)
      finally:
        hook.abort()

      assert _controller_threads() == []
      assert seen == {'infeed': [tf.errors.CancelledError],
                      'outfeed': [tf.errors.OutOfRangeError]}
      assert rendezvous.error is None
      with pytest.raises(tf.errors.CancelledError):
        session.run(enqueue)  # the cancel ops did close the queue


def test_feeding_hook_end_reraises_a_reader_error_after_queues_closed():
  with tf.Graph().as_default():
    outfeed = v1.FIFOQueue(4, [tf.int32], shapes=[[]], name='outfeed')
    drain = outfeed.close(cancel_pending_enqueues=False)
    cancel = outfeed.close(cancel_pending_enqueues=True)
    error = FeedError('host_call failed at step 7')
    loop_state = loop_lib.LoopState()
    rendezvous = ErrorRendezvous()
    with v1.Session() as session:
      hook = _feeding_hook(loop_state, FakeInfeed(),
                           FakeReader(fail_on_loop=1, error=error),
                           rendezvous, drain_ops=[drain], cancel_ops=[cancel])
      hook.after_create_session(session, v1.train.Coordinator())
      # Registered after the hook's own callback, so set once the cancel
      # ops have run.
      cancelled = threading.Event()
      rendezvous.on_error(cancelled.set)
      try:
        _signal_loops(hook, loop_state, [2])
        assert cancelled.wait(TIMEOUT)
        with pytest.raises(FeedError, match='host_call failed at step 7'):
          hook.end(session)
      finally:
        hook.abort()
      assert _controller_threads() == []


# ThroughputHook


class FakeClock(object):
  """Returns the given times in order."""

  def __init__(self, times):
    self._times = list(times)

  def __call__(self):
    return self._times.pop(0)


class FakeWriter(object):

  def __init__(self):
    self.summaries = []
    self.flushes = 0

  def add_summary(self, summary, global_step):
    self.summaries.append((global_step, {v.tag: v.simple_value
                                         for v in summary.value}))

  def flush(self):
    self.flushes += 1


def _throughput_hook(graph, writer, clock, batch_size=8,
                     log_step_count_steps=100):
  with graph.graph.as_default():
    return hooks_lib.ThroughputHook(batch_size, log_step_count_steps,
                                    graph.global_step_after, graph.last_loss,
                                    writer, clock=clock)


def _run_throughput_loops(start_step, sizes, times, **kwargs):
  graph = StepGraph()
  writer = FakeWriter()
  hook = _throughput_hook(graph, writer, FakeClock(times), **kwargs)
  lasts = []
  with graph.session(start_step) as session:
    hook.after_create_session(session, v1.train.Coordinator())
    for size in sizes:
      run_one_loop(session, [hook], {graph.iterations: size})
      lasts.append(dict(hook.last))
    hook.end(session)
  return lasts, writer


def test_throughput_hook_measures_each_loop():
  lasts, writer = _run_throughput_loops(
      0, [4, 4, 2], [100.0, 102.0, 102.5, 103.5, 110.0, 110.25])

  assert [last['global_step'] for last in lasts] == [4, 8, 10]
  assert [last['loss'] for last in lasts] == [0.25] * 3
  assert [last['loop_seconds'] for last in lasts] == pytest.approx(
      [2.0, 1.0, 0.25])
  assert [last['global_step/sec'] for last in lasts] == pytest.approx(
      [2.0, 4.0, 8.0])
  assert [last['examples/sec'] for last in lasts] == pytest.approx(
      [16.0, 32.0, 64.0])
  assert writer.flushes == 1


def test_throughput_hook_writes_summaries_at_each_loops_final_step():
  _, writer = _run_throughput_loops(
      0, [4, 4, 2], [100.0, 102.0, 102.5, 103.5, 110.0, 110.25],
      log_step_count_steps=1)

  assert [step for step, _ in writer.summaries] == [4, 8, 10]
  expected = [(2.0, 2.0, 16.0), (1.0, 4.0, 32.0), (0.25, 8.0, 64.0)]
  for (_, values), (seconds, steps_per_sec, examples_per_sec) in zip(
      writer.summaries, expected):
    assert sorted(values) == ['examples/sec', 'global_step/sec',
                              'loop_seconds']
    assert values['loop_seconds'] == pytest.approx(seconds)
    assert values['global_step/sec'] == pytest.approx(steps_per_sec)
    assert values['examples/sec'] == pytest.approx(examples_per_sec)


def test_throughput_hook_reports_short_loops_together():
  # Loops of 4, 4, 2, 4 steps taking 1, 1, 1 and 2 seconds; reports once
  # 5 or more steps have run: at step 8 (8 steps in 2 s) and at step 14
  # (6 steps in 3 s).
  lasts, writer = _run_throughput_loops(
      0, [4, 4, 2, 4], [0.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 5.0],
      log_step_count_steps=5)

  assert [step for step, _ in writer.summaries] == [8, 14]
  assert [values['global_step/sec'] for _, values in writer.summaries] == (
      pytest.approx([4.0, 2.0]))
  assert [values['examples/sec'] for _, values in writer.summaries] == (
      pytest.approx([32.0, 16.0]))
  assert [values['loop_seconds'] for _, values in writer.summaries] == (
      pytest.approx([1.0, 2.0]))
  # Every loop is still measured on its own.
  assert [last['global_step/sec'] for last in lasts] == pytest.approx(
      [4.0, 4.0, 2.0, 2.0])


def test_throughput_hook_counts_steps_from_the_restored_step():
  lasts, writer = _run_throughput_loops(3, [4], [0.0, 0.5], batch_size=2,
                                        log_step_count_steps=1)

  assert lasts[0]['global_step'] == 7
  assert lasts[0]['global_step/sec'] == pytest.approx(8.0)
  assert lasts[0]['examples/sec'] == pytest.approx(16.0)
  assert [step for step, _ in writer.summaries] == [7]


def test_throughput_hook_logs_every_log_step_count_steps(caplog):
  caplog.set_level(logging.INFO, logger=hooks_lib.__name__)
  _run_throughput_loops(0, [4, 4, 2, 4],
                        [0.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0],
                        log_step_count_steps=5)

  logged = [r.getMessage() for r in caplog.records
            if r.name == hooks_lib.__name__]
  assert [m.split(',')[0] for m in logged] == ['global_step = 8',
                                               'global_step = 14']


@pytest.mark.parametrize('kwargs, pattern', [
    (dict(batch_size=0), r'batch_size.*\b0\b'),
    (dict(log_step_count_steps=-2), r'log_step_count_steps.*-2'),
])
def test_throughput_hook_rejects_bad_arguments(kwargs, pattern):
  graph = StepGraph()
  with pytest.raises(ValueError, match=pattern):
    _throughput_hook(graph, FakeWriter(), FakeClock([]), **kwargs)


# DeviceSystemHook


def _list_devices(**found):
  """A list_devices fake: found['GPU'] etc., nothing for absent kinds."""
  return lambda kind: list(found.get(kind, []))


def test_device_system_hook_begin_fails_plainly_without_a_gpu():
  device = devices.Device('gpu', list_devices=_list_devices(
      CPU=['/physical_device:CPU:0']))
  hook = hooks_lib.DeviceSystemHook(device)
  with pytest.raises(devices.DeviceNotFoundError, match="'gpu'") as raised:
    hook.begin()
  assert isinstance(raised.value, RuntimeError)
  assert '/physical_device:CPU:0' in str(raised.value)


def test_device_system_hook_begin_passes_with_the_device_present(caplog):
  asked = []
  found = _list_devices(CPU=['/physical_device:CPU:0'],
                        GPU=['/physical_device:GPU:0'])

  def list_devices(kind):
    asked.append(kind)
    return found(kind)
  device = devices.Device('gpu', list_devices=list_devices)
  with caplog.at_level(logging.INFO, logger='hookestimator.devices'):
    hooks_lib.DeviceSystemHook(device).begin()
  # begin() itself looked for the device, and said what it found.
  assert asked == ['GPU']
  assert ('Running on gpu; GPU devices found: /physical_device:GPU:0' in
          caplog.text)


def test_tpu_device_builds_its_system_ops_in_a_graph_of_its_own():
  with tf.Graph().as_default() as graph:
    device = devices.Device('tpu', list_devices=_list_devices(
        CPU=['/physical_device:CPU:0']))
    assert graph.get_operations() == []
    assert v1.get_default_graph() is graph

  assert device.init_graph is not None
  assert device.init_graph is not graph
  op_types = sorted(op.type for op in device.init_graph.get_operations())
  assert 'ConfigureDistributedTPU' in op_types
  assert 'ShutdownDistributedTPU' in op_types


def test_device_system_hook_begin_without_a_tpu_says_a_tpu_is_needed():
  with tf.Graph().as_default():
    device = devices.Device('tpu', list_devices=_list_devices(
        CPU=['/physical_device:CPU:0']))
  hook = hooks_lib.DeviceSystemHook(device)
  with pytest.raises(devices.DeviceNotFoundError, match='needs a TPU'):
    hook.begin()


class FakeDevice(object):

  def __init__(self):
    self.calls = []

  def check(self):
    self.calls.append('check')
    return ['/physical_device:CPU:0']

  def initialize(self, session_config=None):
    self.calls.append(('initialize', session_config))

  def shutdown(self, session_config=None):
    self.calls.append(('shutdown', session_config))


def test_device_system_hook_initializes_then_closes_and_shuts_down_once():
  device = FakeDevice()
  config = v1.ConfigProto(allow_soft_placement=True)
  hook = hooks_lib.DeviceSystemHook(device, close_ops=['close infeed'],
                                    session_config=config)
  hook.begin()
  hook.close()  # no session yet: nothing to close or shut down
  assert device.calls == ['check']

  session = FakeSession()
  hook.after_create_session(session, v1.train.Coordinator())
  assert device.calls == ['check', ('initialize', config)]
  assert session.runs == []

  hook.end(session)
  assert session.runs == [['close infeed']]
  assert device.calls == ['check', ('initialize', config),
                          ('shutdown', config)]
  hook.close()
  assert device.calls.count(('shutdown', config)) == 1


def test_device_system_hook_close_ops_close_a_real_queue():
  with tf.Graph().as_default():
    feed_queue = v1.FIFOQueue(2, [tf.int32], shapes=[[]])
    enqueue = feed_queue.enqueue(1)
    close = feed_queue.close(cancel_pending_enqueues=True)
    device = devices.Device('cpu', list_devices=_list_devices(
        CPU=['/physical_device:CPU:0']))
    hook = hooks_lib.DeviceSystemHook(device, close_ops=[close])
    hook.begin()
    with v1.Session() as session:
      hook.after_create_session(session, v1.train.Coordinator())
      session.run(enqueue)  # still open
      hook.close()
      with pytest.raises(tf.errors.CancelledError):
        session.run(enqueue)


# CheckpointHook


class CheckpointGraph(StepGraph):

  def __init__(self):
    super(CheckpointGraph, self).__init__()
    with self.graph.as_default():
      self.scaffold = v1.train.Scaffold(saver=v1.train.Saver())


def _run_checkpoint_loops(model_dir, final_steps, **kwargs):
  graph = CheckpointGraph()
  with graph.graph.as_default():
    hook = CheckpointHook(model_dir, graph.scaffold, graph.global_step_after,
                          **kwargs)
    hook.begin()
  with graph.session(0) as session:
    hook.after_create_session(session, v1.train.Coordinator())
    step = 0
    for final_step in final_steps:
      run_one_loop(session, [hook], {graph.iterations: final_step - step})
      step = final_step
    assert int(session.run(graph.global_step)) == final_steps[-1]
    hook.end(session)
  return hook


def _checkpoint_steps(model_dir):
  state = v1.train.get_checkpoint_state(model_dir)
  assert state is not None
  return [int(path.rsplit('-', 1)[1])
          for path in state.all_model_checkpoint_paths]


def test_checkpoint_hook_saves_every_save_steps_at_loop_ends(tmp_path):
  model_dir = str(tmp_path)
  hook = _run_checkpoint_loops(model_dir, [4, 8, 12, 13], save_steps=5)

  assert hook.saved_steps == [8, 13]
  assert _checkpoint_steps(model_dir) == [8, 13]
  latest = v1.train.latest_checkpoint(model_dir)
  assert os.path.basename(latest) == 'model.ckpt-13'
  assert v1.train.load_variable(latest, 'global_step') == 13
  assert v1.train.load_variable(
      os.path.join(model_dir, 'model.ckpt-8'), 'global_step') == 8


def test_checkpoint_hook_saves_the_final_step_at_end(tmp_path):
  model_dir = str(tmp_path)
  hook = _run_checkpoint_loops(model_dir, [4, 8, 12], save_steps=5)

  assert hook.saved_steps == [8, 12]
  assert _checkpoint_steps(model_dir) == [8, 12]
  assert v1.train.load_variable(v1.train.latest_checkpoint(model_dir),
                                'global_step') == 12


def test_checkpoint_hook_with_save_secs_saves_at_end(tmp_path):
  model_dir = str(tmp_path)
  hook = _run_checkpoint_loops(model_dir, [4, 8], save_secs=3600)

  assert hook.saved_steps == [8]
  assert _checkpoint_steps(model_dir) == [8]


@pytest.mark.parametrize('kwargs', [
    dict(save_steps=5, save_secs=60),
    dict(),
])
def test_checkpoint_hook_needs_exactly_one_of_steps_and_secs(tmp_path, kwargs):
  with tf.Graph().as_default():
    with pytest.raises(ValueError, match='exactly one') as raised:
      CheckpointHook(str(tmp_path), None, tf.constant(0, tf.int64), **kwargs)
  assert 'save_steps=%r' % kwargs.get('save_steps') in str(raised.value)
  assert 'save_secs=%r' % kwargs.get('save_secs') in str(raised.value)


@pytest.mark.parametrize('kwargs, pattern', [
    (dict(save_steps=0), r'save_steps.*\b0\b'),
    (dict(save_steps=-5), r'save_steps.*-5'),
    (dict(save_secs=-1), r'save_secs.*-1'),
])
def test_checkpoint_hook_rejects_non_positive_intervals(tmp_path, kwargs,
                                                        pattern):
  with tf.Graph().as_default():
    with pytest.raises(ValueError, match=pattern):
      CheckpointHook(str(tmp_path), None, tf.constant(0, tf.int64), **kwargs)
