"""The NaN check: a step whose loss is NaN or Inf fails, naming the step.

The check runs inside the device loop, before the step's values are
outfed, so the loop stops at that step; no checkpoint is written after it,
and the error comes out of train() as NanLossError.
"""
import re

import tensorflow as tf

MARKER = 'NaN or Inf loss at step'
_STEP = re.compile(re.escape(MARKER) + r'\]\s*\[(-?\d+)\]')


class NanLossError(RuntimeError):
  """The loss was NaN or Inf at `step` (the global step when the step
  began, as in TensorBoard)."""

  def __init__(self, step, detail):
    super(NanLossError, self).__init__(
        'Loss is NaN or Inf at step %s; training stopped there, and no '
        'checkpoint was written after it. (%s)' % (step, detail))
    self.step = step


def checked_loss(loss, step):
  """`loss`, with a check that fails the step when it is NaN or Inf."""
  finite = tf.reduce_all(tf.math.is_finite(loss))
  check = tf.debugging.Assert(finite, [MARKER, step, 'loss', loss],
                              summarize=1, name='nan_check')
  with tf.control_dependencies([check]):
    return tf.identity(loss)


def translate(error):
  """The NanLossError for a failed check; any other error as it is."""
  if not isinstance(error, tf.errors.InvalidArgumentError):
    return error
  match = _STEP.search(error.message or '')
  if match is None:
    return error
  detail = next(line for line in error.message.split('\n') if MARKER in line)
  translated = NanLossError(int(match.group(1)), detail.strip())
  translated.__cause__ = error
  return translated
