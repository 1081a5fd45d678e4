"""The framework's SessionRunHooks, one job each.

- DeviceSystemHook: device check, system init before the first loop; at
  the end, closing the feeding queues and system shutdown.
- LoopSizeHook: the size of each device loop, and stopping at the step;
  with a StepTimeSizer, loops sized to last a given time.
- InfeedOutfeedHook: signals the infeed and outfeed controllers with each
  loop's size; joins them at the end and re-raises their errors.
- ThroughputHook: per-loop step, loss, time and speed, logged and written
  as TensorBoard scalars every log_step_count_steps steps.
"""
import collections
import logging
import time

import tensorflow as tf

from hookestimator import config as config_lib
from hookestimator.compat import v1
from hookestimator.controller import Controller

log = logging.getLogger(__name__)

# How long the end of training waits for a controller to finish the work it
# was already given (draining the last loop's outfeed, say).
JOIN_TIMEOUT_SECS = 120


class DeviceSystemHook(v1.train.SessionRunHook):
  """Owns the device system: checked at begin, initialised before the first
  loop, and at the end the feeding queues are closed (so nothing can block
  on them) and the system shut down."""

  def __init__(self, device, close_ops=(), session_config=None):
    self._device = device
    self._close_ops = list(close_ops)
    self._session_config = session_config
    self._session = None
    self._initialized = False

  def begin(self):
    self._device.check()

  def after_create_session(self, session, coord):
    self._session = session
    self._device.initialize(self._session_config)
    self._initialized = True

  def end(self, session):
    self.close()

  def close(self):
    """Closes the feeding queues and shuts the system down; idempotent."""
    session, self._session = self._session, None  # Not kept past the run.
    if session is not None and self._close_ops:
      close_ops, self._close_ops = self._close_ops, []
      session.run(close_ops)
    if self._initialized:
      self._initialized = False
      self._device.shutdown(self._session_config)


class StepTimeSizer(object):
  """Sizes training loops to last about `target_seconds` each, from the time
  the last loops took per step (TPUConfig's `iterations_per_loop='300s'`).

  The first loop runs `first_size` steps; every later one
  target_seconds / (seconds / steps over the last `window` loops), at
  least one step. The hook that runs the loops reports each loop's start
  and its steps once it ended; `clock` gives the time.
  """

  def __init__(self, target_seconds, first_size=1, window=20,
               clock=time.monotonic):
    self.target_seconds = config_lib.check_positive_number('target_seconds',
                                                           target_seconds)
    if self.target_seconds is None:
      raise ValueError('target_seconds must be a positive number, got None')
    self._first_size = config_lib.check_positive_int('first_size',
                                                     first_size)
    self._loops = collections.deque(
        maxlen=config_lib.check_positive_int('window', window))
    self._clock = clock
    self._start = None

  def loop_started(self):
    self._start = self._clock()

  def loop_ended(self, steps):
    if self._start is None or steps <= 0:
      return
    self._loops.append((max(self._clock() - self._start, 0.0), steps))
    self._start = None

  def next_size(self):
    """The steps the next loop should run to last about target_seconds."""
    seconds = sum(loop[0] for loop in self._loops)
    steps = sum(loop[1] for loop in self._loops)
    if not steps:
      return self._first_size
    if seconds <= 0.0:  # Too fast for the clock: grow as fast as possible.
      return max(self._first_size, steps * 2)
    return max(1, int(round(self.target_seconds * steps / seconds)))


class LoopSizeHook(v1.train.SessionRunHook):
  """Sizes each loop as min(iterations_per_loop, final_step - global_step)
  and stops training at exactly the final step.

  With `sizer` (a StepTimeSizer) the loops are sized by the time a step
  takes instead of iterations_per_loop: min(sizer's size, steps left).
  The size goes to the device loop as a feed, and to the feeding hook
  through the shared LoopState.
  """

  def __init__(self, loop_state, iterations_per_loop, iterations_tensor,
               global_step_after, num_steps=None, last_step=None,
               sizer=None):
    if num_steps is not None and last_step is not None:
      raise ValueError('Give num_steps or last_step, not both; got %r and %r'
                       % (num_steps, last_step))
    self._loop_state = loop_state
    self._iterations_per_loop = config_lib.check_positive_int(
        'iterations_per_loop', iterations_per_loop)
    self._num_steps = config_lib.check_positive_int('num_steps', num_steps,
                                                    allow_none=True)
    self._last_step = config_lib.check_positive_int('last_step', last_step,
                                                    allow_none=True)
    self._iterations_tensor = iterations_tensor
    self._global_step_after = global_step_after
    self._sizer = sizer
    self._global_step = None
    self.final_step = None

  def begin(self):
    self._global_step = v1.train.get_global_step()
    if self._global_step is None:
      raise RuntimeError('LoopSizeHook needs a global step in the graph')

  def after_create_session(self, session, coord):
    step = int(session.run(self._global_step))
    # Fixed at the first session: a session re-created after a preemption
    # restores an earlier step but must not move the goal.
    if self.final_step is None:
      if self._num_steps is not None:
        self.final_step = step + self._num_steps
      else:
        self.final_step = self._last_step
    self._next_loop(step, coord)

  def before_run(self, run_context):
    if self._sizer is not None:
      self._sizer.loop_started()
    return v1.train.SessionRunArgs(
        self._global_step_after,
        feed_dict={self._iterations_tensor: self._loop_state.iterations})

  def after_run(self, run_context, run_values):
    step = int(run_values.results)
    if step <= self._step_before:
      raise RuntimeError(
          'The global step did not advance in a loop of %d steps (it reads '
          '%d): the train_op must increment it, e.g. minimize(loss, '
          'global_step=tf.compat.v1.train.get_global_step())' %
          (self._loop_state.iterations, step))
    if self._sizer is not None:
      self._sizer.loop_ended(step - self._step_before)
    self._next_loop(step, run_context)

  def _loop_size(self):
    if self._sizer is not None:
      return self._sizer.next_size()
    return self._iterations_per_loop

  def _next_loop(self, step, stopper):
    self._step_before = step
    if self.final_step is None:
      self._loop_state.iterations = self._loop_size()
    elif step >= self.final_step:
      self._loop_state.iterations = 0
      stopper.request_stop()
    else:
      self._loop_state.iterations = min(self._loop_size(),
                                        self.final_step - step)


class InfeedOutfeedHook(v1.train.SessionRunHook):
  """Starts the infeed and outfeed controllers, signals both with each
  loop's size, and joins them at the end.

  `infeed.run_loop(session, count)` and `reader.read_loop(session, count)`
  are the controllers' work for one loop; `reader.flush(session)` runs once
  both have stopped. An infeed the loop reads itself
  (`infeed.feeds_from_thread` false) gets no controller; when a loop ends
  the run without finishing (the end of its input), the hook sets its
  `input_ended`. At the end `drain_ops` close the queues so that the
  outfeed thread takes what is left and stops (a loop cut short by the end
  of input sends fewer steps than signalled); on an error `cancel_ops` also
  unblock any pending queue op. `cancel_ops=None` says no op can unblock
  the queues (a TPU's hardware feeds): on an error the session is closed,
  which cancels every pending run.

  The outfeed controller is signalled once at least `outfeed_batch_steps`
  steps are waiting (and at the end), so that with short loops one read
  takes many loops' steps. The device never waits on this as long as the
  outfeed queue holds 2 * outfeed_batch_steps steps.

  Once the controllers are joined at the end (or on abort), the hook lets
  go of the session, and so do `session_holders` (the feeds, whose
  callables hold it, through their `release_session()`): the session, and
  the model's memory in it, goes as soon as the run does, not at some
  later garbage collection.
  """

  def __init__(self, loop_state, infeed, reader, rendezvous, drain_ops=(),
               cancel_ops=(), join_timeout=JOIN_TIMEOUT_SECS,
               outfeed_batch_steps=1, session_holders=()):
    self._loop_state = loop_state
    self._infeed = infeed
    self._reader = reader
    self._rendezvous = rendezvous
    self._drain_ops = list(drain_ops)
    self._cancel_ops = None if cancel_ops is None else list(cancel_ops)
    self._join_timeout = join_timeout
    self._outfeed_batch_steps = config_lib.check_positive_int(
        'outfeed_batch_steps', outfeed_batch_steps)
    self._session_holders = list(session_holders)
    self._unread_steps = 0
    self._infeed_controller = None
    self._outfeed_controller = None
    self._loop_running = False
    self._session = None
    self._cancels_on_error = False

  def after_create_session(self, session, coord):
    if not self._cancels_on_error:
      # On the first error anywhere, unblock every queue op at once.
      self._rendezvous.on_error(self._cancel_queues)
      self._cancels_on_error = True
    # A re-created session (after a preemption) gets fresh controllers; the
    # old ones only ever ran on the old session.
    self.join()
    self._session = session
    self._unread_steps = 0
    self._loop_running = False
    if self._infeed.feeds_from_thread:
      self._infeed_controller = Controller(
          'InfeedController',
          lambda count: self._infeed.run_loop(session, count),
          self._rendezvous).start()
    self._outfeed_controller = Controller(
        'OutfeedController',
        lambda count: self._reader.read_loop(session, count),
        self._rendezvous).start()

  def before_run(self, run_context):
    count = self._loop_state.iterations
    if self._infeed_controller is not None:
      self._infeed_controller.signal(count)
    self._loop_running = True
    self._unread_steps += count
    if self._unread_steps >= self._outfeed_batch_steps:
      self._signal_outfeed()

  def _signal_outfeed(self):
    if self._unread_steps and self._outfeed_controller is not None:
      self._outfeed_controller.signal(self._unread_steps)
      self._unread_steps = 0

  def after_run(self, run_context, run_values):
    self._loop_running = False

  def end(self, session):
    if self._loop_running:
      # A loop that did not finish ends a run cleanly only at the end of
      # its input (OutOfRangeError), which a loop reading its input
      # itself learns only here.
      self._infeed.input_ended = True
    self._signal_outfeed()
    if self._drain_ops:
      try:
        session.run(self._drain_ops)
      except tf.errors.CancelledError:
        pass  # Already closed by the error path; the error is raised below.
    self.join()  # If a thread hangs, abort() still has the session to cancel.
    try:
      self._rendezvous.raise_if_error()
      self._reader.flush(session)
    finally:
      self._release_session()

  def abort(self):
    """Stops at once: cancels pending queue ops, then joins the threads."""
    try:
      self._cancel_queues()
      self.join()
    finally:
      self._release_session()

  def _release_session(self):
    self._session = None
    for holder in self._session_holders:
      holder.release_session()

  def join(self):
    """Lets the controllers finish their signalled work and joins them."""
    controllers = [c for c in (self._infeed_controller,
                               self._outfeed_controller) if c is not None]
    self._infeed_controller = self._outfeed_controller = None
    for controller in controllers:
      controller.stop()
    for controller in controllers:
      controller.join(self._join_timeout)

  def _cancel_queues(self):
    if self._session is None:
      return
    if self._cancel_ops is None:
      self._session.close()
    elif self._cancel_ops:
      self._session.run(self._cancel_ops)


class ThroughputHook(v1.train.SessionRunHook):
  """Measures every loop (`last`: global step, loss, loop time, speeds) and
  reports once at least `log_step_count_steps` steps have run since the last
  report: a log line and TensorBoard scalars at the loop's final step, the
  speeds averaged over the loops reported. With loops of at least
  `log_step_count_steps` steps that is every loop; shorter loops are not
  each worth a line and an event."""

  def __init__(self, batch_size, log_step_count_steps, global_step_after,
               last_loss, writer, clock=time.monotonic, tags=None):
    """`tags`: {tag: the name to write it under}, for tags a host_call
    also writes (host_call.framework_tag_names)."""
    self._batch_size = config_lib.check_positive_int('batch_size', batch_size)
    self._log_every = config_lib.check_positive_int('log_step_count_steps',
                                                    log_step_count_steps)
    self._fetches = {'step': global_step_after, 'loss': last_loss}
    self._writer = writer
    self._clock = clock
    self._tags = dict(tags or {})
    self._start = None
    self._last_step = None
    self._span_steps = 0
    self._span_seconds = 0.0
    self.last = None

  def after_create_session(self, session, coord):
    self._last_step = int(session.run(v1.train.get_global_step()))

  def before_run(self, run_context):
    self._start = self._clock()
    return v1.train.SessionRunArgs(self._fetches)

  def after_run(self, run_context, run_values):
    seconds = max(self._clock() - self._start, 1e-9)
    step = int(run_values.results['step'])
    loss = float(run_values.results['loss'])
    steps = step - self._last_step
    self._last_step = step
    self.last = {
        'global_step': step,
        'loss': loss,
        'loop_seconds': seconds,
        'global_step/sec': steps / seconds,
        'examples/sec': steps * self._batch_size / seconds,
    }
    self._span_steps += steps
    self._span_seconds += seconds
    if self._span_steps >= self._log_every:
      self._report(step, loss, seconds)

  def _report(self, step, loss, loop_seconds):
    steps_per_sec = self._span_steps / self._span_seconds
    examples_per_sec = steps_per_sec * self._batch_size
    self._span_steps, self._span_seconds = 0, 0.0
    summary = v1.Summary()
    for tag, value in (('loop_seconds', loop_seconds),
                       ('global_step/sec', steps_per_sec),
                       ('examples/sec', examples_per_sec)):
      summary.value.add(tag=self._tags.get(tag, tag), simple_value=value)
    self._writer.add_summary(summary, step)
    log.info('global_step = %d, loss = %.6g, loop = %.3f s, '
             'examples/sec = %.1f, global_step/sec = %.2f', step, loss,
             loop_seconds, examples_per_sec, steps_per_sec)

  def end(self, session):
    self._writer.flush()
