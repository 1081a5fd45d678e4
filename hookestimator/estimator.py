"""HookEstimator: builds the training graph and its hooks, and runs the loops."""
import inspect
import logging
import tempfile

import tensorflow as tf

from hookestimator import compat
from hookestimator import config as config_lib
from hookestimator import evaluation
from hookestimator import evaluator_task
from hookestimator import export
from hookestimator import device_feeds
from hookestimator import inference
from hookestimator import task_server
from hookestimator import prediction
from hookestimator import replicas
from hookestimator import runs
from hookestimator import signatures
from hookestimator import training
from hookestimator.checkpoint import DefaultSaver
from hookestimator.compat import v1
from hookestimator.input_position import is_input_position_key

log = logging.getLogger(__name__)

RESERVED_PARAMS_KEYS = ('batch_size',)


def _parameters(fn):
  return inspect.signature(fn).parameters


def _call_with_optional(fn, args, optional):
  """Calls fn(*args) plus the keyword arguments in `optional` it takes."""
  names = _parameters(fn)
  takes_kwargs = any(p.kind == p.VAR_KEYWORD for p in names.values())
  kwargs = {k: v for k, v in optional.items() if takes_kwargs or k in names}
  return fn(*args, **kwargs)


class HookEstimator(object):
  """Trains a model_fn many steps per session.run, fed by host threads.

  Args:
    model_fn: `model_fn(features, labels, mode, params)`, called as
      Estimator calls it (labels, mode, params and config are optional
      arguments, passed by name) and returning a HookEstimatorSpec or an
      EstimatorSpec (hookestimator's, or tf.estimator's where it exists).
    config: a RunConfig; the defaults when None.
    params: a dict passed to model_fn and input_fn; 'batch_size' is set by
      the estimator.
    train_batch_size: the batch size input_fn must produce in training.
    eval_batch_size, predict_batch_size: the batch sizes of evaluation and
      prediction; train_batch_size when None.
  """

  def __init__(self, model_fn, config=None, params=None, train_batch_size=32,
               eval_batch_size=None, predict_batch_size=None):
    if not callable(model_fn):
      raise TypeError('model_fn must be callable, got %r' % (model_fn,))
    signatures.check_model_fn(model_fn)  # For every mode, before any runs.
    if config is None:
      config = config_lib.RunConfig()
    if not isinstance(config, config_lib.RunConfig):
      raise TypeError('config must be a hookestimator.RunConfig, got %r' %
                      (config,))
    if params is None:
      params = {}
    if not isinstance(params, dict):
      raise TypeError('params must be a dict or None, got %r' % (params,))
    for key in RESERVED_PARAMS_KEYS:
      if key in params:
        raise ValueError(
            'params sets the reserved key %r (to %r); the estimator sets it '
            'from train_batch_size' % (key, params[key]))
    self._train_batch_size = config_lib.check_positive_int(
        'train_batch_size', train_batch_size)
    self._eval_batch_size = config_lib.check_positive_int(
        'eval_batch_size', eval_batch_size,
        allow_none=True) or self._train_batch_size
    self._predict_batch_size = config_lib.check_positive_int(
        'predict_batch_size', predict_batch_size,
        allow_none=True) or self._train_batch_size
    if config.model_dir is None:
      config = config.replace(model_dir=tempfile.mkdtemp(
          prefix='hookestimator_'))
      log.info('Using temporary model_dir %s', config.model_dir)
    self._model_fn = model_fn
    self._config = config
    self._params = dict(params)

  @property
  def model_dir(self):
    return self._config.model_dir

  @property
  def config(self):
    return self._config

  @property
  def params(self):
    return dict(self._params)

  @property
  def train_batch_size(self):
    return self._train_batch_size

  @property
  def eval_batch_size(self):
    return self._eval_batch_size

  @property
  def predict_batch_size(self):
    return self._predict_batch_size

  def latest_checkpoint(self):
    """The path of the newest checkpoint in model_dir, or None."""
    return v1.train.latest_checkpoint(self.model_dir)

  def _require_checkpoint(self):
    path = self.latest_checkpoint()
    if path is None:
      raise ValueError('model_dir %s holds no checkpoint yet; train first' %
                       self.model_dir)
    return path

  def get_variable_names(self):
    """Names of the variables in the latest checkpoint."""
    return [name for name, _ in
            v1.train.list_variables(self._require_checkpoint())
            if not is_input_position_key(name)]

  def get_variable_value(self, name):
    """The value of variable `name` in the latest checkpoint (numpy)."""
    return v1.train.load_variable(self._require_checkpoint(), name)

  def checkpoint_step(self):
    """The global step of the latest checkpoint in model_dir; 0 when none."""
    path = self.latest_checkpoint()
    if path is None:
      return 0
    return int(v1.train.load_variable(path, v1.GraphKeys.GLOBAL_STEP))

  def train(self, input_fn, steps=None, max_steps=None, hooks=None):
    """Trains until `steps` more steps, `max_steps` in all, or input ends.

    Returns the estimator.
    """
    if steps is not None and max_steps is not None:
      raise ValueError('Give steps or max_steps, not both; got steps=%r and '
                       'max_steps=%r' % (steps, max_steps))
    steps = config_lib.check_positive_int('steps', steps, allow_none=True)
    max_steps = config_lib.check_positive_int('max_steps', max_steps,
                                              allow_none=True)
    if not callable(input_fn):
      raise TypeError('input_fn must be callable, got %r' % (input_fn,))
    signatures.check_input_fn(input_fn)
    if hooks is not None and not isinstance(hooks, (list, tuple)):
      raise TypeError('hooks must be a list of SessionRunHooks, got %r' %
                      (hooks,))
    user_hooks = list(hooks or ())
    for hook in user_hooks:
      if not isinstance(hook, v1.train.SessionRunHook):
        raise TypeError('hooks must be SessionRunHook instances, got %r' %
                        (hook,))
    if self._config.evaluator is not None:
      raise ValueError(
          'this process is the cluster\'s evaluator task (%s): it evaluates '
          "the chief's checkpoints and trains nothing; run train_and_evaluate "
          '(the same command as every other task) or evaluate' %
          self._config.evaluator.describe(self._config.evaluator.task))
    cluster = self._config.cluster
    if cluster is None:
      self._train(input_fn, steps, max_steps, user_hooks)
      return self
    server = task_server.server(cluster, self._config.session_config)
    timeout = self._config.peer_timeout_secs

    def run():
      self._train(input_fn, steps, max_steps, user_hooks)
    if cluster.task_type == 'feeder':
      task_server.serve(cluster, server, timeout)
    elif not cluster.is_chief:  # Trains its own replicas; never returns.
      task_server.run_worker(cluster, server, timeout, run)
    task_server.run_chief(cluster, server, timeout, run)
    return self

  def _train(self, input_fn, steps, max_steps, user_hooks):
    start_step = self.checkpoint_step()
    if max_steps is not None and start_step >= max_steps:
      log.info('Skipping training: the checkpoint is at step %d and '
               'max_steps=%d', start_step, max_steps)
      return
    training.train(self, input_fn, steps, max_steps, user_hooks)

  def evaluate(self, input_fn, steps=None, hooks=None, checkpoint_path=None,
               name=None):
    """Evaluates the checkpoint (the latest when None) on input_fn's data.

    Runs in loops of iterations_per_loop steps; with `steps=None` over the
    whole dataset exactly once (a short last batch is padded and the
    padding not counted), else over at most `steps` batches. Returns a dict
    of the eval_metrics values, `loss` (when the spec has one) and
    `global_step`, also written to TensorBoard in model_dir/eval (or
    eval_<name>) at that step.
    """
    run = evaluation.Evaluation(self, input_fn, steps, hooks,
                                checkpoint_path, name)
    with run.graph.as_default():
      runs.run_loops(run.session_creator, run.hooks, run.fetch,
                     run.rendezvous, run.aborts, run.loop_options)
    return run.results()

  def predict(self, input_fn, predict_keys=None, hooks=None,
              checkpoint_path=None, yield_single_examples=True):
    """A generator of the predictions for every example of input_fn's data,
    in input order (a short last batch is padded and sliced back).

    Yields per example (dicts of arrays, or arrays for a single predictions
    tensor), or per batch with `yield_single_examples=False`. Arguments are
    checked and the graph built at once; the session starts at the first
    next(). Closing the generator early ends its threads and session.
    """
    run = prediction.Prediction(self, input_fn, predict_keys, hooks,
                                checkpoint_path, yield_single_examples)
    return _predictions(run)

  def export_saved_model(self, export_dir_base, serving_input_receiver_fn,
                         assets_extra=None, as_text=False,
                         checkpoint_path=None):
    """Writes a SavedModel for serving into a new timestamped directory
    under export_dir_base, and returns that directory (a str)."""
    return export.export_saved_model(self, export_dir_base,
                                     serving_input_receiver_fn, assets_extra,
                                     as_text, checkpoint_path)

  def train_and_evaluate(self, train_input_fn, eval_input_fn, max_steps,
                         eval_every_steps, eval_steps=None, hooks=None,
                         name=None, throttle_secs=0):
    """Trains to `max_steps`, evaluating at every multiple of
    `eval_every_steps`, at `max_steps`, and when the training input ends,
    all in one graph and one session: the training graph is built and the
    device system initialised once. (A stop asked for by a hook or a signal
    ends without one more evaluation.)

    Each evaluation reads the variables at that step and writes its results
    to TensorBoard at that step (model_dir/eval or eval_<name>). Returns the
    list of every evaluation's results, in order.

    On a cluster, as under Estimator, the chief and workers train to
    `max_steps` (and return []), and the `evaluator` task evaluates each
    checkpoint the chief writes, at least `throttle_secs` apart, until one
    at or past `max_steps` (evaluator_task.py); eval_every_steps is then
    unused: the checkpoints set the evaluated steps.
    """
    for label, fn in (('train_input_fn', train_input_fn),
                      ('eval_input_fn', eval_input_fn)):
      if not callable(fn):
        raise TypeError('%s must be callable, got %r' % (label, fn))
      signatures.check_input_fn(fn, label)
    max_steps = config_lib.check_positive_int('max_steps', max_steps)
    eval_every_steps = config_lib.check_positive_int('eval_every_steps',
                                                     eval_every_steps)
    eval_steps = config_lib.check_positive_int('eval_steps', eval_steps,
                                               allow_none=True)
    name = evaluation.check_name(name)
    user_hooks = inference.check_hooks(hooks)
    throttle_secs = config_lib.check_non_negative_number('throttle_secs',
                                                         throttle_secs)
    if self._config.evaluator is not None:
      return evaluator_task.run(self, eval_input_fn, max_steps,
                                steps=eval_steps, hooks=user_hooks,
                                name=name, throttle_secs=throttle_secs)
    if self._config.cluster is not None:
      log.info('Training on the cluster; its evaluator task, if it has '
               'one, evaluates the checkpoints')
      self.train(train_input_fn, max_steps=max_steps, hooks=user_hooks)
      return []
    if self.checkpoint_step() >= max_steps:
      log.info('The checkpoint is at or past max_steps=%d; evaluating only',
               max_steps)
      return [self.evaluate(eval_input_fn, steps=eval_steps, name=name)]
    built = []
    add_on = evaluation.rounds_add_on(self, eval_input_fn, eval_steps,
                                      eval_every_steps, max_steps, name, built)
    training.train(self, train_input_fn, None, max_steps, user_hooks,
                   add_on=add_on)
    return built[0].history

  def _replica_plan(self, global_batch, name, cluster=None):
    """How a mode's global batch goes over the configured replicas (of
    every worker of `cluster`)."""
    return replicas.Plan(self._config.device, self._config.num_replicas,
                         global_batch, name,
                         layout=self._input_layout(name), cluster=cluster)

  def _input_layout(self, batch_name):
    """How input_fn's batches of `batch_name` reach the replicas
    (replicas.SPLIT, EACH or PER_REPLICA; TPUEstimator's
    per_host_input_for_training): here each replica reads its own."""
    del batch_name
    return replicas.EACH

  def _call_input_fn(self, input_fn, params, call=None):
    """input_fn's dataset, built on the host; `call` is the
    tpu_context.InputCall this call is (TPUEstimator's context)."""
    del call
    with tf.device(device_feeds.HOST_DEVICE):
      return _call_with_optional(input_fn, (), {'params': params,
                                                'config': self._config})

  def _call_model_fn_for_export(self, features):
    """model_fn's PREDICT graph for a SavedModel of serving `features`."""
    return self._call_model_fn(
        features, None, compat.ModeKeys.PREDICT,
        dict(self.params, batch_size=self.predict_batch_size))

  def _call_model_fn(self, features, labels, mode, params):
    return signatures.call_model_fn(
        self._model_fn, features, labels,
        {'mode': mode, 'params': params, 'config': self._config})

  def _scaffold(self, spec, local_init_ops):
    user = spec.scaffold_fn() if spec.scaffold_fn is not None else None
    if user is not None and not isinstance(user, v1.train.Scaffold):
      raise TypeError('scaffold_fn must return a tf.compat.v1.train.Scaffold, '
                      'got %r' % (user,))
    saver = user.saver if user is not None else None
    if saver is None:
      saver = DefaultSaver(self._config.keep_checkpoint_max)
    if not v1.get_collection(v1.GraphKeys.SAVERS):
      # As Estimator, for hooks that save with the graph's saver
      # (CheckpointSaverHook, AsyncCheckpointSaverHook).
      v1.add_to_collection(v1.GraphKeys.SAVERS, saver)
    user_local_init = user.local_init_op if user is not None else None
    local_init = tf.group(
        user_local_init if user_local_init is not None else
        v1.train.Scaffold.default_local_init_op(), *local_init_ops)
    if user is None:
      return v1.train.Scaffold(saver=saver, local_init_op=local_init)
    user_init_fn = user.init_fn
    return v1.train.Scaffold(
        init_op=user.init_op, init_feed_dict=user.init_feed_dict,
        init_fn=((lambda _, session: user_init_fn(session))
                 if user_init_fn is not None else None),
        ready_op=user.ready_op,
        ready_for_local_init_op=user.ready_for_local_init_op,
        local_init_op=local_init, summary_op=user.summary_op, saver=saver)


_DONE = object()


def _predictions(run):
  """Yields a prediction.Prediction's results loop by loop.

  The graph is the default only while this generator works, never while
  the consumer holds a prediction. Closing the generator, or an error,
  closes the loops: threads stopped, queues and session closed.
  """
  loops = runs.loops(run.session_creator, run.hooks, run.fetch,
                     run.rendezvous, run.aborts, run.loop_options)
  try:
    while True:
      with run.graph.as_default():
        if next(loops, _DONE) is _DONE:
          return
        results = run.take_loop()
      for result in results:
        yield result
  finally:
    with run.graph.as_default():
      loops.close()
