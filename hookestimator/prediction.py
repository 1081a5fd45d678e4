"""Prediction: predictions come back through the outfeed, in input order.

Each step of the PREDICT loop outfeeds [row states, *prediction tensors].
The outfeed thread drains a loop's steps in one session.run, drops the
padding rows and hands the loop's batches to the main thread through a
queue; the predict generator yields them after each loop. Closing the
generator early, or an error in the consumer that ends it, stops the
threads and closes the session (HookEstimator.predict).
"""
import queue

import numpy as np

from hookestimator import compat
from hookestimator import hooks as hooks_lib
from hookestimator import inference
from hookestimator import padding
from hookestimator import spec as spec_lib

ModeKeys = compat.ModeKeys

_FAILED = object()


def check_predict_keys(predict_keys):
  """None, or predict_keys as a list of strings."""
  if predict_keys is None:
    return None
  if isinstance(predict_keys, str):
    predict_keys = [predict_keys]
  if (not isinstance(predict_keys, (list, tuple)) or not predict_keys or
      not all(isinstance(k, str) for k in predict_keys)):
    raise TypeError('predict_keys must be a string, a non-empty list of '
                    'strings or None, got %r' % (predict_keys,))
  return list(predict_keys)


class _Outfed(object):
  """What each PREDICT step outfeeds: the predictions asked for."""

  def __init__(self, predict_keys):
    self._predict_keys = predict_keys
    self.keys = None

  def __call__(self, spec, pads, batch_size, trimmed=False, replicas=1):
    """`batch_size`: a replica's batch; predictions are batch-major,
    padded or not (`trimmed`: their rows vary, as the batch's do)."""
    del pads
    keys, tensors = spec_lib.check_predict_spec(spec, batch_size, trimmed)
    if self._predict_keys is None:
      self.keys = keys
      return tensors
    if keys is None:
      raise ValueError('predict_keys %r were given, but model_fn returned a '
                       'single predictions tensor rather than a dict' %
                       (self._predict_keys,))
    unknown = [k for k in self._predict_keys if k not in keys]
    if unknown:
      raise ValueError('predict_keys %r are not among the predictions; '
                       'model_fn returned %r' % (unknown, keys))
    self.keys = list(self._predict_keys)
    return [tensors[keys.index(k)] for k in self.keys]


class PredictionReader(object):
  """Drains the PREDICT outfeed one loop at a time; each loop's batches,
  padding dropped, go to the main thread through `take_loop()`."""

  def __init__(self, outfeed, rendezvous):
    self._outfeed = outfeed
    self._fetches = list(outfeed.dequeue_op)
    self._loops = queue.Queue()
    # Wakes a main thread waiting for a loop when any thread fails.
    rendezvous.on_error(lambda: self._loops.put(_FAILED))

  def read_loop(self, session, count):
    """Handles up to `count` steps; returns how many came through."""
    out = self._outfeed.run_dequeue(session, self._fetches, count)
    batches = []
    steps = 0 if out is None else len(out[0])
    for step in range(steps):
      real = out[0][step] == padding.REAL
      if real.any():
        batches.append([values[step][real] for values in out[1:]])
    self._loops.put(batches)
    return steps

  @property
  def init_ops(self):
    return []

  def flush(self, session):
    del session  # Nothing buffered.

  def take_loop(self, timeout):
    """The next loop's batches (lists of arrays); None if a thread failed."""
    try:
      batches = self._loops.get(timeout=timeout)
    except queue.Empty:
      raise RuntimeError('The outfeed thread sent no predictions within %.0f '
                         'seconds of the loop ending' % timeout)
    return None if batches is _FAILED else batches


class Prediction(inference.InferenceRun):
  """One predict() call; after each run of `fetch`, take that loop's
  predictions with `take_loop()`."""

  def __init__(self, estimator, input_fn, predict_keys=None, hooks=None,
               checkpoint_path=None, yield_single_examples=True):
    if not isinstance(yield_single_examples, (bool, np.bool_)):
      raise TypeError('yield_single_examples must be True or False, got %r' %
                      (yield_single_examples,))
    self._single = bool(yield_single_examples)
    self._outfed = _Outfed(check_predict_keys(predict_keys))
    self._reader = None
    super(Prediction, self).__init__(
        estimator, input_fn, ModeKeys.PREDICT, estimator.predict_batch_size,
        self._outfed, None, hooks, checkpoint_path)

  def _make_reader(self, outfeed):
    self._reader = PredictionReader(outfeed, self.rendezvous)
    return self._reader

  def take_loop(self):
    """The last loop's predictions, in input order, as predict yields them;
    raises the first error of any thread."""
    batches = self._reader.take_loop(hooks_lib.JOIN_TIMEOUT_SECS)
    if batches is None:
      self.rendezvous.raise_if_error()
      raise RuntimeError('A feeding thread failed')  # not reached
    keys = self._outfed.keys
    out = []
    for columns in batches:
      if self._single and keys is None:
        out.extend(columns[0])  # Its rows.
      elif self._single:
        out.extend(dict(zip(keys, row)) for row in zip(*columns))
      else:
        out.append(columns[0] if keys is None else dict(zip(keys, columns)))
    return out
