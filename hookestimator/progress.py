"""ProgressHook: training progress for people watching.

On a terminal, a live tqdm bar (global step of the last step, loss,
examples/sec, ETA), updated once per loop. Otherwise (a log file, CI) a
plain log line at most every `log_every_secs`, and one at the end.
"""
import logging
import sys
import time

import tqdm

from hookestimator import config as config_lib
from hookestimator import loop as loop_lib
from hookestimator.compat import v1

log = logging.getLogger(__name__)


def _duration(seconds):
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  minutes, seconds = divmod(rest, 60)
  return ('%dh%02dm%02ds' % (hours, minutes, seconds) if hours else
          '%dm%02ds' % (minutes, seconds))


class ProgressHook(v1.train.SessionRunHook):
  """Reports progress towards global step `last_step`.

  Args:
    last_step: the global step training ends at.
    batch_size: examples per step, for examples/sec.
    stream: where the bar goes (stderr when None); a bar is drawn only when
      it is a terminal.
    log_every_secs: the least time between two log lines without a bar.
  """

  def __init__(self, last_step, batch_size, stream=None, log_every_secs=30.0,
               clock=time.monotonic):
    self._last_step = config_lib.check_positive_int('last_step', last_step)
    self._batch_size = config_lib.check_positive_int('batch_size', batch_size)
    self._log_every = config_lib.check_positive_number('log_every_secs',
                                                       log_every_secs)
    self._stream = stream if stream is not None else sys.stderr
    self._clock = clock
    self._fetches = None
    self._bar = None
    self._start_step = self._start_time = None
    self._step = self._loss = None
    self._logged_at = self._logged_step = None

  def begin(self):
    self._fetches = loop_lib.loop_outputs()

  def after_create_session(self, session, coord):
    self._start_step = self._step = int(
        session.run(v1.train.get_global_step()))
    self._start_time = self._logged_at = self._clock()
    isatty = getattr(self._stream, 'isatty', None)
    if isatty is not None and isatty():
      self._bar = tqdm.tqdm(total=self._last_step, initial=self._start_step,
                            unit='step', file=self._stream, dynamic_ncols=True)

  def before_run(self, run_context):
    return v1.train.SessionRunArgs(self._fetches)

  def after_run(self, run_context, run_values):
    step, loss = run_values.results
    done, self._step, self._loss = int(step) - self._step, int(step), loss
    if self._bar is not None:
      self._bar.set_postfix_str('loss=%.4g, %.0f examples/sec' %
                                (loss, self.examples_per_sec()), refresh=False)
      self._bar.update(done)
    elif self._clock() - self._logged_at >= self._log_every:
      self._log()

  @property
  def loss(self):
    """The loss of the last step seen, or None before the first loop."""
    return None if self._loss is None else float(self._loss)

  def examples_per_sec(self):
    """Examples per second since this session started."""
    seconds = max(self._clock() - self._start_time, 1e-9)
    return (self._step - self._start_step) * self._batch_size / seconds

  def _log(self):
    self._logged_at, self._logged_step = self._clock(), self._step
    rate = self.examples_per_sec() / self._batch_size
    left = self._last_step - self._step
    log.info('step %d/%d (%d%%), loss %.4g, %.0f examples/sec, ETA %s',
             self._step, self._last_step, 100 * self._step // self._last_step,
             self._loss, rate * self._batch_size,
             _duration(left / rate) if rate > 0 else 'unknown')

  def end(self, session):
    if self._bar is not None:
      self._bar.close()
      self._bar = None
    elif self._loss is not None and self._logged_step != self._step:
      self._log()
