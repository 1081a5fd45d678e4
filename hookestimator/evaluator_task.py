"""A cluster's evaluator task: train_and_evaluate on the task TF_CONFIG
names `evaluator`.

As Estimator's evaluator, it is no part of the training cluster: it
evaluates, in its own process, each checkpoint the chief writes to the
shared model_dir, writing the results under model_dir/eval (or
eval_<name>) at the checkpoint's step. It ends when it has evaluated a
checkpoint at or past max_steps. Unlike Estimator's, it evaluates every
checkpoint, oldest first, not only the newest. One slower than the chief
works through the backlog; once a checkpoint is deleted before its turn
(keep_checkpoint_max), it goes on with the newest.

It watches the chief, where the chief serves (a cluster of several
training tasks), with a probe before each evaluation. A chief gone with
its last checkpoint at or past max_steps ended its run: the checkpoints
left are evaluated and the evaluator ends as usual. Gone before it, the
chief was lost: the evaluator raises LostTaskError naming it. A lost evaluator is nothing to the
training tasks, which never wait for it.
"""
import logging
import os
import time

import tensorflow as tf

from hookestimator import inference
from hookestimator import task_server
from hookestimator.compat import v1

log = logging.getLogger(__name__)

# How often the evaluator looks for a new checkpoint (and probes the chief).
POLL_SECS = 1.0


def checkpoint_step(path):
  """The global step in a checkpoint path's suffix (model.ckpt-100)."""
  return int(os.path.basename(path).rsplit('-', 1)[1])


class CheckpointsToEvaluate(object):
  """The checkpoints in model_dir not evaluated yet, oldest first."""

  def __init__(self, model_dir):
    self._model_dir = model_dir
    self._done = -1

  def new(self):
    state = v1.train.get_checkpoint_state(self._model_dir)
    if state is None:
      return []
    found = sorted(set(state.all_model_checkpoint_paths) |
                   {state.model_checkpoint_path}, key=checkpoint_step)
    return [path for path in found if checkpoint_step(path) > self._done]

  def done(self, path):
    self._done = max(self._done, checkpoint_step(path))

  def skip_to_newest(self):
    """Leaves every checkpoint but the newest unevaluated: once one was
    deleted before its turn, the rest of the backlog would go the same
    way."""
    found = self.new()
    if len(found) > 1:
      self.done(found[-2])


class Throttle(object):
  """At least `seconds` between the starts of two evaluations."""

  def __init__(self, seconds, clock=time.monotonic, sleep=time.sleep):
    self._seconds = seconds
    self._clock = clock
    self._sleep = sleep
    self._last = None

  def wait(self):
    if self._last is not None:
      left = self._last + self._seconds - self._clock()
      if left > 0:
        self._sleep(left)
    self._last = self._clock()


def run(estimator, input_fn, max_steps, steps=None, hooks=None, name=None,
        throttle_secs=0, poll_secs=POLL_SECS):
  """Evaluates each checkpoint of estimator.model_dir until one at or past
  `max_steps`; returns every evaluation's results, in step order."""
  cluster = estimator.config.evaluator
  watch = None
  if cluster is not None and cluster.chief_serves:
    watch = task_server.ChiefWatch(cluster)
    watch.wait(estimator.config.peer_timeout_secs)
  checkpoints = CheckpointsToEvaluate(estimator.model_dir)
  throttle = Throttle(throttle_secs)
  history = []
  log.info('Evaluator: evaluating each checkpoint in %s up to step %d',
           estimator.model_dir, max_steps)
  while True:
    pending = checkpoints.new()
    if watch is not None and watch.probe() != task_server.ANSWERED:
      if not watch.health.lost:
        time.sleep(poll_secs)  # Probed again soon: lost, or a blip.
        continue
      # The chief is gone. (The checkpoints were listed before the probe:
      # a chief that ended its run wrote its last one before it stopped
      # answering.) Before max_steps it was lost; at max_steps training
      # ended, and the checkpoints left are evaluated with no more probes.
      if not pending or checkpoint_step(pending[-1]) < max_steps:
        raise task_server.LostTaskError(
            'the evaluator stops before max_steps=%d: %s' % (
                max_steps, task_server.lost_message([watch.name])))
      watch = None
    if not pending:
      time.sleep(poll_secs)
      continue
    path = pending[0]
    checkpoints.done(path)
    results = _evaluate(estimator, input_fn, steps, hooks, name, path,
                        throttle)
    if results is None:
      log.warning('Evaluator: %s was deleted before it was evaluated '
                  '(keep_checkpoint_max); going on with the newest', path)
      checkpoints.skip_to_newest()
      continue
    log.info('Evaluator: step %d: %s', results['global_step'], results)
    history.append(results)
    if results['global_step'] >= max_steps:
      return history


def _evaluate(estimator, input_fn, steps, hooks, name, path, throttle):
  """The results of evaluating checkpoint `path`; None when it was
  deleted before or while it was read."""
  if not inference.is_checkpoint(path):
    return None
  throttle.wait()
  try:
    return estimator.evaluate(input_fn, steps=steps, hooks=hooks,
                              checkpoint_path=path, name=name)
  except (tf.errors.NotFoundError, tf.errors.DataLossError, ValueError):
    if inference.is_checkpoint(path):
      raise
    return None
