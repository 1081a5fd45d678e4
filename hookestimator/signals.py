"""Stopping training cleanly on SIGTERM (preemption) and SIGINT (Ctrl-C).

While train() runs on the main thread, the first SIGTERM or SIGINT does
not end the process: training stops at the end of the loop in progress,
the final checkpoint is written for that step, and train() raises
TrainingInterrupted, which exits the process with code 128 + the signal
number (143 for SIGTERM, 130 for SIGINT) unless it is caught. A second
signal acts as it would have without hookestimator. The previous handlers
are back when train() returns. Off the main thread, where Python cannot
install signal handlers, nothing is installed.
"""
import logging
import signal
import threading

from hookestimator.compat import v1

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class TrainingInterrupted(SystemExit):
  """train() stopped early on a signal, after saving a checkpoint.

  A SystemExit, so that a script that does not catch it exits with
  `code` = 128 + the signal number. Attributes: `signal_number`, `step`
  (the global step of the last checkpoint) and `checkpoint` (its path, or
  None when no step was ever saved).
  """

  def __init__(self, signal_number, step, checkpoint):
    super(TrainingInterrupted, self).__init__(128 + signal_number)
    self.signal_number = signal_number
    self.step = step
    self.checkpoint = checkpoint
    name = signal.Signals(signal_number).name
    if checkpoint is None:
      saved = 'no checkpoint was written'
    else:
      saved = 'checkpoint %s holds step %d' % (checkpoint, step)
    self.message = (
        'Training stopped by %s at step %s: %s. Run train() again with the '
        'same model_dir to resume. Exit code %d.' % (name, step, saved,
                                                      self.code))

  def __str__(self):
    return self.message


class SignalStop(object):
  """A context manager in which the first SIGTERM or SIGINT is recorded
  (`signal_number`) instead of acting; SignalStopHook then stops training
  at the next loop boundary.

  Nothing here takes a lock. Python runs a signal handler on the main
  thread, between two bytecodes of whatever the main thread was doing: a
  handler that takes a lock the main thread may already hold (reading
  `signal_number`, say) waits for itself forever. The handler only
  assigns attributes and calls signal.signal, neither of which blocks.
  """

  def __init__(self, signals=STOP_SIGNALS):
    self._signals = tuple(signals)
    self._previous = {}
    # Written only by _handle, which runs on the main thread; read from any
    # thread. Reading or assigning one attribute is atomic under the GIL.
    self._signal_number = None

  @property
  def signal_number(self):
    """The first signal received, or None."""
    return self._signal_number

  def __enter__(self):
    if threading.current_thread() is not threading.main_thread():
      log.debug('train() runs off the main thread: no signal handlers.')
      return self
    for number in self._signals:
      previous = signal.getsignal(number)
      # None: a handler installed outside Python, which cannot be put back.
      if previous is None or previous == signal.SIG_IGN:
        continue
      # Saved before ours goes in: a signal landing right after it finds
      # the handler to put back.
      self._previous[number] = previous
      signal.signal(number, self._handle)
    if self._signal_number is not None:
      # A signal landed while the handlers went in; those installed after
      # its handler restored the others must go too.
      self._restore()
    return self

  def __exit__(self, *unused_exc_info):
    self._restore()
    return False

  def _handle(self, number, unused_frame):
    # First signal wins, without a lock: handlers run one at a time on the
    # main thread, so only a second signal's handler nested between this
    # test and the assignment could interleave; it would record its number
    # and this (the first) assignment would then overwrite it with ours.
    if self._signal_number is None:
      self._signal_number = number
    # A second signal acts as it would have without us.
    self._restore()

  def _restore(self):
    # Idempotent (the saved handlers stay saved): a handler nested in a
    # restore, or a restore after the handler's, puts back the same ones.
    for number, handler in list(self._previous.items()):
      signal.signal(number, handler)

  def raise_if_stopped(self, step, checkpoint):
    """Raises TrainingInterrupted if a signal was received."""
    number = self.signal_number
    if number is None:
      return
    error = TrainingInterrupted(number, step, checkpoint)
    log.error('%s', error.message)
    raise error


class SignalStopHook(v1.train.SessionRunHook):
  """Stops training at the first loop boundary after a signal; the
  checkpoint hook's end() then saves that step."""

  def __init__(self, signal_stop):
    self._signal_stop = signal_stop
    self._reported = False

  def after_create_session(self, session, coord):
    if self._signal_stop.signal_number is not None:
      self._stop(coord, int(session.run(v1.train.get_global_step())))

  def after_run(self, run_context, run_values):
    if self._signal_stop.signal_number is not None:
      self._stop(run_context,
                 int(run_context.session.run(v1.train.get_global_step())))

  def _stop(self, stopper, step):
    if not self._reported:
      self._reported = True
      log.warning('Received %s: stopping at step %d and saving a checkpoint.',
                  signal.Signals(self._signal_stop.signal_number).name, step)
    stopper.request_stop()
