"""Controller threads signalled through a queue.Queue, and the error rendezvous.

A controller runs `work(count)` for each loop count put in its signal queue
and ends at STOP. Every controller body runs inside an ErrorRendezvous: the
first real error from any thread is kept, the rendezvous's callbacks close
the feeding queues so no other thread can block on them, and the main
thread re-raises the error with its original type and message.
"""
import logging
import queue
import threading

import tensorflow as tf

log = logging.getLogger(__name__)

STOP = object()

# Errors that a controller sees only because a queue or session it uses was
# closed: the cause (a shutdown, or another thread's error) is elsewhere.
SHUTDOWN_ERRORS = (tf.errors.CancelledError,)


class ErrorRendezvous(object):
  """Keeps the first error from any thread and re-raises it on request."""

  def __init__(self):
    self._lock = threading.Lock()
    self._error = None
    self._source = None
    self._callbacks = []

  def on_error(self, callback):
    """Calls `callback()` once, when the first error is recorded."""
    with self._lock:
      self._callbacks.append(callback)

  def record(self, source, error):
    """Keeps `error` (an exception) if it is the first; returns whether it is."""
    with self._lock:
      if self._error is not None:
        log.debug('%s: later error ignored: %r', source, error)
        return False
      self._error, self._source = error, source
      callbacks = list(self._callbacks)
    log.error('%s failed: %s: %s', source, type(error).__name__, error)
    for callback in callbacks:
      try:
        callback()
      except Exception:  # pylint: disable=broad-except
        log.exception('error callback failed after %s failed', source)
    return True

  @property
  def error(self):
    with self._lock:
      return self._error

  @property
  def source(self):
    with self._lock:
      return self._source

  def raise_if_error(self):
    error = self.error
    if error is not None:
      raise error


class Controller(object):
  """A named daemon thread running `work(count)` for each signalled count."""

  def __init__(self, name, work, rendezvous):
    self.name = name
    self._work = work
    self._rendezvous = rendezvous
    self._signals = queue.Queue()
    self._thread = threading.Thread(name=name, target=self._run)
    self._thread.daemon = True
    self._stopped = False

  def start(self):
    self._thread.start()
    return self

  def signal(self, count):
    """Asks the thread to handle one loop of `count` steps."""
    if self._stopped:
      raise RuntimeError('%s was signalled after it was stopped' % self.name)
    self._signals.put(count)

  def stop(self):
    """Lets the thread finish what it was signalled, then end."""
    if not self._stopped:
      self._stopped = True
      self._signals.put(STOP)

  def join(self, timeout):
    """Stops the thread and waits up to `timeout` seconds for it to end."""
    self.stop()
    if self._thread.ident is not None:
      self._thread.join(timeout)
    if self._thread.is_alive():
      raise RuntimeError('%s thread did not stop within %.0f seconds' %
                         (self.name, timeout))

  def is_alive(self):
    return self._thread.is_alive()

  def _run(self):
    log.debug('%s started', self.name)
    try:
      while True:
        count = self._signals.get()
        if count is STOP:
          break
        self._work(count)
    except SHUTDOWN_ERRORS as error:
      log.debug('%s stopped by a closed queue: %s', self.name, error)
    except BaseException as error:  # pylint: disable=broad-except
      self._rendezvous.record(self.name, error)
    log.debug('%s finished', self.name)
