"""Evaluation: metrics computed on the host from outfed tensors.

Each step of the EVAL loop outfeeds [row states, loss, *eval_metrics
tensors]. The outfeed thread drains a loop's steps in one session.run that
also drops the padding rows and runs metric_fn's update ops on what is
left, so every real example counts once and no padding counts. `loss` is
the mean over the batches of their losses, as Estimator's and
TPUEstimator's is: each batch with a real example counts once (a short
one too), a batch past the end not at all. Off a TPU with one replica a
short batch's loss is model_fn's on its real rows (inference.py trims the
padding); on a TPU and with several replicas it is model_fn's on the
padded batch, as on TPUEstimator.

`Evaluation` is one evaluate() call in a graph and session of its own;
`EvaluationRounds` evaluates between training loops inside the training
session, without building a graph or initialising the device again.
"""
import logging
import numbers
import os
import threading

import numpy as np
import tensorflow as tf

from hookestimator import compat
from hookestimator import config as config_lib
from hookestimator import event_writer
from hookestimator import device_feeds
from hookestimator import hooks as hooks_lib
from hookestimator import inference
from hookestimator import loop as loop_lib
from hookestimator import metric_ops
from hookestimator import padding
from hookestimator import spec as spec_lib
from hookestimator import tensor_input
from hookestimator.compat import v1

log = logging.getLogger(__name__)

ModeKeys = compat.ModeKeys
RESERVED_METRIC_NAMES = ('loss', 'global_step')


def eval_dir(model_dir, name=None):
  """Where an evaluation writes its summaries: model_dir/eval[_name]."""
  return os.path.join(model_dir, 'eval' if name is None else 'eval_' + name)


def check_name(name):
  if name is not None and (not isinstance(name, str) or not name or
                           os.sep in name):
    raise ValueError('name must be a non-empty string without %r, or None; '
                     'got %r' % (os.sep, name))
  return name


class _Outfed(object):
  """What each EVAL step outfeeds, chosen when the loop is built."""

  def __init__(self):
    self.has_loss = False
    self.metrics = None
    self.pads = None

  def __call__(self, spec, pads, batch_size, trimmed=False, replicas=1):
    """`pads`: whether the input's short batches are padded, so that the
    metrics tensors' padding rows (of `batch_size`, a replica's batch) must
    be dropped; `trimmed`: whether model_fn saw them trimmed (their rows
    vary); `replicas`: how many replicas run model_fn."""
    self.pads = pads
    self.metrics = spec_lib.check_eval_spec(
        spec, batch_size if pads else None, trimmed=trimmed,
        replicas=replicas)
    self.has_loss = spec.loss is not None
    values = [tf.cast(spec.loss, tf.float32)] if self.has_loss else []
    return values + (self.metrics.tensors if self.metrics else [])


def _check_metric_name(name, has_loss, source):
  if name in RESERVED_METRIC_NAMES and (name != 'loss' or has_loss):
    raise ValueError('%s a metric named %r, which the evaluation reports '
                     'itself; rename it' % (source, name))


def _check_metric_ops(result, has_loss):
  if not isinstance(result, dict):
    raise TypeError('eval_metrics metric_fn returned %r; expected a dict '
                    '{name: (value, update_op)} as tf.compat.v1.metrics '
                    'functions return' % (result,))
  for name, pair in result.items():
    if not isinstance(name, str):
      raise TypeError('eval_metrics metric_fn returned the key %r; metric '
                      'names must be strings' % (name,))
    _check_metric_name(name, has_loss, 'eval_metrics metric_fn returned')
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
      raise TypeError('eval_metrics metric_fn returned %r for %r; expected a '
                      '(value, update_op) pair' % (pair, name))


class MetricsReader(object):
  """Drains the EVAL outfeed one loop at a time and updates the metrics.

  `read_loop(session, count)` is the outfeed controller's work for one
  loop; `results(session)` reads the metrics once the controller is done;
  `reset(session)` starts them again (for evaluation rounds).
  """

  def __init__(self, outfeed, outfed):
    stacked = list(outfeed.dequeue_op)
    self._outfeed = outfeed
    self._has_loss = outfed.has_loss
    real = tf.equal(stacked[0], padding.REAL)
    self._fetches = {'count': tf.reduce_sum(tf.cast(real, tf.int64), 1)}
    if self._has_loss:
      self._fetches['loss'] = stacked[1]
    self._values = {}
    self._in_loop = None
    self._last_values = None
    metric_variables = []
    if isinstance(outfed.metrics, metric_ops.MetricOps):
      # The loop's own metric values, one per step: the last real step's
      # are the results.
      self._in_loop = outfed.metrics.names
      for name in self._in_loop:
        _check_metric_name(name, self._has_loss, 'eval_metric_ops has')
      self._fetches['in_loop'] = stacked[2 if self._has_loss else 1:]
      metric_variables = outfed.metrics.variables
    elif outfed.metrics is not None:
      metric_variables = self._build_metrics(stacked, real, outfed)
    self.reset_op = v1.variables_initializer(metric_variables)
    self._lock = threading.Lock()
    self._loss_sum = 0.0
    self._batches = 0
    self._examples = 0

  def _build_metrics(self, stacked, real, outfed):
    """Runs metric_fn on the host on the loop's real examples; returns the
    variables it made."""
    with tf.device(device_feeds.HOST_DEVICE), v1.name_scope('eval_metrics'):
      columns = stacked[2 if self._has_loss else 1:]
      if outfed.pads:
        # Steps and rows in one axis, then only the real examples.
        keep = tf.reshape(real, [-1])
        kept = [tf.boolean_mask(tf.reshape(t, [-1] + t.shape[2:].as_list()),
                                keep) for t in columns]
      else:
        # Whole batches of any layout: the real steps, concatenated along
        # the tensors' first axis, as TPUEstimator concatenates them.
        keep = real[:, 0]
        kept = [tf.reshape(tf.boolean_mask(t, keep),
                           [-1] + t.shape[2:].as_list()) for t in columns]
      before = {id(v) for v in v1.local_variables()}
      result = outfed.metrics.call(kept)
      _check_metric_ops(result, self._has_loss)
      metric_variables = [v for v in v1.local_variables()
                          if id(v) not in before]
      self._values = {name: pair[0] for name, pair in result.items()}
      self._fetches['update'] = tf.group(*[pair[1]
                                           for pair in result.values()])
    return metric_variables

  @property
  def init_ops(self):
    return [self.reset_op]

  def reset(self, session):
    session.run(self.reset_op)
    with self._lock:
      self._loss_sum = 0.0
      self._batches = 0
      self._examples = 0
      self._last_values = None

  def read_loop(self, session, count):
    """Handles up to `count` steps; returns how many came through."""
    out = self._outfeed.run_dequeue(session, self._fetches, count)
    if out is None:
      return 0
    counts = out['count']
    # Estimator's loss: the mean over batches (tf.compat.v1.metrics.mean).
    batches = counts > 0
    with self._lock:
      self._examples += int(np.sum(counts))
      self._batches += int(np.sum(batches))
      if self._has_loss:
        self._loss_sum += float(np.sum(
            out['loss'].astype(np.float64)[batches]))
      if self._in_loop is not None and np.any(batches):
        last = int(np.flatnonzero(batches)[-1])
        self._last_values = [column[last] for column in out['in_loop']]
    return len(counts)

  def flush(self, session):
    del session  # Nothing buffered: the metrics live in the session.

  def results(self, session):
    """{metric name: value, 'loss': the mean loss over the batches}."""
    results = session.run(self._values) if self._values else {}
    with self._lock:
      examples, batches = self._examples, self._batches
      loss_sum = self._loss_sum
      if self._in_loop is not None:
        results = {name: (self._last_values[k] if self._last_values
                          else np.float32('nan'))
                   for k, name in enumerate(self._in_loop)}
    if examples == 0:
      log.warning('The evaluation input held no examples')
    if self._has_loss:
      results['loss'] = np.float32(loss_sum / batches if batches
                                   else float('nan'))
    return results


def write_results(writer, results, step, checkpoint_path=None):
  """Writes the scalar results as TensorBoard scalars at `step`, and, as
  Estimator does, the path of the checkpoint evaluated."""
  summary = v1.Summary()
  if checkpoint_path is not None:
    summary.value.add(tag='checkpoint_path', tensor=tf.make_tensor_proto(
        checkpoint_path, dtype=tf.string))
  for name in sorted(results):
    value = results[name]
    if name == 'global_step':
      continue
    if np.ndim(value) == 0 and isinstance(np.asarray(value).item(),
                                          numbers.Number):
      summary.value.add(tag=name, simple_value=float(value))
    else:
      log.info('Not writing metric %r to TensorBoard: not a scalar number',
               name)
  writer.add_summary(summary, step)
  writer.flush()


def _format(results):
  return ', '.join('%s = %s' % (k, results[k]) for k in sorted(results))


class _ResultsHook(v1.train.SessionRunHook):
  """Reads the metrics at the end, once the outfeed thread is done."""

  def __init__(self, reader):
    self._reader = reader
    self.results = None

  def end(self, session):
    results = self._reader.results(session)
    results['global_step'] = int(session.run(v1.train.get_global_step()))
    self.results = results


class Evaluation(inference.InferenceRun):
  """One evaluate() call; read `results()` after running it."""

  def __init__(self, estimator, input_fn, steps=None, hooks=None,
               checkpoint_path=None, name=None):
    steps = config_lib.check_positive_int('steps', steps, allow_none=True)
    directory = eval_dir(estimator.model_dir, check_name(name))
    self._outfed = _Outfed()
    self._results = None
    super(Evaluation, self).__init__(
        estimator, input_fn, ModeKeys.EVAL, estimator.eval_batch_size,
        self._outfed, steps, hooks, checkpoint_path)
    self._directory = directory

  def _make_reader(self, outfeed):
    reader = MetricsReader(outfeed, self._outfed)
    self._results = _ResultsHook(reader)
    return reader

  def _after_feeding(self):
    return [self._results]

  def results(self):
    """The metrics, `loss` and `global_step`; written to TensorBoard."""
    results = self._results.results
    writer = event_writer.EventWriter(self._directory, self.graph)
    try:
      write_results(writer, results, results['global_step'],
                    self.checkpoint)
    finally:
      writer.close()
    log.info('Evaluation at step %d: %s', results['global_step'],
             _format(results))
    return results


class EvaluationRounds(v1.train.SessionRunHook):
  """Evaluates inside the training session: when a training loop ends at a
  multiple of `every_steps` or at `final_step`, and when the training input
  ends.

  Built in the training graph after the training loop (sharing its
  variables, its error rendezvous and its device system); it caps the
  training loops through their LoopState so that they end at the
  evaluation steps. Each round reads the variables as they are at that
  step and writes its results to TensorBoard at that step; `history` holds
  every round's results.
  """

  def __init__(self, estimator, input_fn, steps, every_steps, final_step,
               name, device, train_loop_state, rendezvous, global_step_after,
               train_infeed):
    self._every = every_steps
    self._final_step = final_step
    self._steps = steps
    self._iterations_per_loop = estimator.config.iterations_per_loop
    self._train_loop_state = train_loop_state
    self._global_step_after = global_step_after
    self._train_infeed = train_infeed
    self._rendezvous = rendezvous
    # Its event file opens at the first round's results; closed at the end.
    self._writer = event_writer.EventWriter(
        eval_dir(estimator.model_dir, name), v1.get_default_graph())
    plan = estimator._replica_plan(estimator.eval_batch_size,
                                   'eval_batch_size')
    call, = plan.input_calls()
    dataset = estimator._call_input_fn(
        input_fn, dict(estimator.params, batch_size=plan.input_batch), call)
    if tensor_input.is_tensor_input(dataset):
      raise TypeError(
          'eval_input_fn returned %r; train_and_evaluate evaluates inside '
          'the training graph, restarting the input for every round, which '
          'needs a tf.data.Dataset. Return one, or evaluate() between '
          'train() calls' % (dataset,))
    params = dict(estimator.params, batch_size=plan.replica_batch)
    outfed = _Outfed()
    with v1.name_scope('evaluation'):
      self._pipeline = inference.InferencePipeline(
          dataset, plan, device,
          inference.model_caller(estimator, params), ModeKeys.EVAL, outfed,
          estimator.config.feeding, reuse=True)
      self._reader = MetricsReader(self._pipeline.outfeed, outfed)
    self._loop_state = loop_lib.LoopState()
    self._feeding = hooks_lib.InfeedOutfeedHook(
        self._loop_state, self._pipeline.infeed, self._reader, rendezvous,
        drain_ops=self._pipeline.drain_ops,
        cancel_ops=self._pipeline.cancel_ops,
        session_holders=[self._pipeline.infeed, self._pipeline.outfeed])
    self.init_ops = self._reader.init_ops
    self.history = []
    self._next_eval = None
    self._last_eval_step = None

  def after_create_session(self, session, coord):
    step = int(session.run(v1.train.get_global_step()))
    self._next_eval = (step // self._every + 1) * self._every
    self._cap(step)

  def before_run(self, run_context):
    return v1.train.SessionRunArgs(self._global_step_after)

  def after_run(self, run_context, run_values):
    step = int(run_values.results)
    if step >= self._next_eval or step >= self._final_step:
      self.evaluate(run_context.session, step)
      self._next_eval = (step // self._every + 1) * self._every
    self._cap(step)

  def end(self, session):
    # Training ended with its input: evaluate that step too. (A stop asked
    # for by a hook or a signal ends without one more evaluation.)
    step = int(session.run(v1.train.get_global_step()))
    try:
      if step != self._last_eval_step and self._train_infeed.input_ended:
        self.evaluate(session, step)
      self._feeding.end(session)
    finally:
      self._writer.close()

  def abort(self):
    try:
      self._feeding.abort()
    finally:
      self._writer.close()

  def _cap(self, step):
    """Ends the next training loop at the next evaluation step."""
    iterations = self._train_loop_state.iterations
    if iterations:
      self._train_loop_state.iterations = min(iterations,
                                              self._next_eval - step)

  def evaluate(self, session, step):
    """One evaluation round, from the start of the input; returns and
    records its results."""
    session.run([self._pipeline.infeed.initializer])
    self._reader.reset(session)
    loop = self._pipeline.loop
    self._feeding.after_create_session(session, None)
    try:
      done = 0
      size = inference.next_loop_size(self._iterations_per_loop,
                                       self._steps, done)
      while size:
        self._loop_state.iterations = size
        self._feeding.before_run(None)
        stopped = session.run(loop.stopped, {loop.iterations: size})
        done += size
        size = 0 if stopped else inference.next_loop_size(
            self._iterations_per_loop, self._steps, done)
    except BaseException:
      self._feeding.abort()
      raise
    self._feeding.join()
    self._rendezvous.raise_if_error()
    results = self._reader.results(session)
    results['global_step'] = step
    write_results(self._writer, results, step)
    log.info('Evaluation at step %d: %s', step, _format(results))
    self._last_eval_step = step
    self.history.append(results)
    return results


def rounds_add_on(estimator, input_fn, steps, every_steps, final_step, name,
                  built):
  """The `add_on` for estimator._train_graph that builds EvaluationRounds;
  appends it to `built`."""
  def add_on(device, loop_state, rendezvous, device_loop, infeed):
    rounds = EvaluationRounds(estimator, input_fn, steps, every_steps,
                              final_step, name, device, loop_state,
                              rendezvous, device_loop.global_step_after,
                              infeed)
    built.append(rounds)
    return rounds
  return add_on
