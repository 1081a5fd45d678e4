"""Running a mode's loops: `fetch` once per loop in a MonitoredSession with
the mode's hooks, and every way out of it (end of input, an error in any
thread, an early close) stopping the controllers and closing the queues."""
import logging

import tensorflow as tf

from hookestimator import nan
from hookestimator.compat import v1

log = logging.getLogger(__name__)


def run_loops(creator, hooks, fetch, rendezvous, aborts, options=None):
  """Runs `fetch` once per loop in a MonitoredSession until a hook stops.

  The end of input stops training cleanly (every hook's end() runs). Any
  other error, here or in a controller thread, stops the controllers and
  closes the queues first, then comes out with its original type and
  message.
  """
  for _ in loops(creator, hooks, fetch, rendezvous, aborts, options):
    pass


def loops(creator, hooks, fetch, rendezvous, aborts, options=None):
  """run_loops as a generator of each loop's result. Closing it early
  stops the controllers, closes the queues and the session (hooks' end()
  does not run)."""
  aborted = []

  def abort():
    if aborted:
      return  # Once: a second time would run ops on a closed session.
    aborted.append(True)
    for stop in aborts:
      try:
        stop()
      except Exception:  # pylint: disable=broad-except
        log.exception('Error while stopping after a failure')

  try:
    session = v1.train.MonitoredSession(session_creator=creator, hooks=hooks)
  except BaseException:
    abort()
    raise
  try:
    with session:
      try:
        while not session.should_stop():
          yield session.run(fetch, options=options)
      except GeneratorExit:
        abort()
        raise
      except BaseException as error:
        if (isinstance(error, tf.errors.OutOfRangeError) and
            rendezvous.error is None):
          raise  # End of input: MonitoredSession ends cleanly, end() runs.
        rendezvous.record('training loop', nan.translate(error))
        abort()
        raise rendezvous.error
  except BaseException:
    # Also an error from a hook's end() as the session closed: whatever a
    # later hook's end() would have stopped is stopped here.
    abort()
    raise
