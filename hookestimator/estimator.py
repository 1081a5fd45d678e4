"""HookEstimator: builds the training graph and its hooks, and runs the loops."""
import inspect
import logging
import os
import tempfile

import tensorflow as tf

from hookestimator import config as config_lib
from hookestimator import devices
from hookestimator import feed
from hookestimator import hooks as hooks_lib
from hookestimator import loop as loop_lib
from hookestimator.checkpoint import CheckpointHook
from hookestimator.compat import v1
from hookestimator.controller import ErrorRendezvous
from hookestimator.host_call import OutfeedReader
from hookestimator.spec import ModeKeys

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
    model_fn: `model_fn(features, labels, mode, params)` (mode, params and
      config are optional arguments) returning a HookEstimatorSpec or a
      tf.estimator.EstimatorSpec.
    config: a RunConfig; the defaults when None.
    params: a dict passed to model_fn and input_fn; 'batch_size' is set by
      the estimator.
    train_batch_size: the batch size input_fn must produce in training.
  """

  def __init__(self, model_fn, config=None, params=None, train_batch_size=32):
    if not callable(model_fn):
      raise TypeError('model_fn must be callable, got %r' % (model_fn,))
    if 'features' not in _parameters(model_fn) and not any(
        p.kind == p.VAR_POSITIONAL for p in _parameters(model_fn).values()):
      raise ValueError('model_fn %s must take a `features` argument; its '
                       'arguments are %s' % (model_fn.__name__,
                                             list(_parameters(model_fn))))
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
            v1.train.list_variables(self._require_checkpoint())]

  def get_variable_value(self, name):
    """The value of variable `name` in the latest checkpoint (numpy)."""
    return v1.train.load_variable(self._require_checkpoint(), name)

  def _checkpoint_step(self):
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
    user_hooks = list(hooks or ())
    for hook in user_hooks:
      if not isinstance(hook, v1.train.SessionRunHook):
        raise TypeError('hooks must be SessionRunHook instances, got %r' %
                        (hook,))
    start_step = self._checkpoint_step()
    if max_steps is not None and start_step >= max_steps:
      log.info('Skipping training: the checkpoint is at step %d and '
               'max_steps=%d', start_step, max_steps)
      return self
    with tf.Graph().as_default() as graph:
      self._train_graph(graph, input_fn, steps, max_steps, user_hooks)
    return self

  def _train_graph(self, graph, input_fn, steps, max_steps, user_hooks):
    config = self._config
    params = dict(self._params, batch_size=self._train_batch_size)
    device = devices.Device(config.device)
    global_step = loop_lib.create_global_step(graph)
    with tf.device(feed.HOST_DEVICE):
      dataset = _call_with_optional(input_fn, (), {'params': params,
                                                   'config': config})
    infeed, outfeed = feed.make_feeds(device.kind, dataset,
                                      self._train_batch_size)
    device_loop = loop_lib.DeviceLoop(
        global_step, infeed, outfeed,
        lambda features, labels, mode: self._call_model_fn(
            features, labels, mode, params),
        device)
    writer = v1.summary.FileWriterCache.get(self.model_dir)
    reader = OutfeedReader(outfeed, device_loop.host_call, writer)
    scaffold = self._scaffold(device_loop.spec, [infeed.initializer] +
                              reader.init_ops)
    rendezvous = ErrorRendezvous()
    loop_state = loop_lib.LoopState()
    # Hardware feeds (TPU) have no close ops: an error closes the session.
    closable = infeed.close_op is not None
    cancel_ops = [infeed.close_op, outfeed.cancel_op] if closable else None
    feeding = hooks_lib.InfeedOutfeedHook(
        loop_state, infeed, reader, rendezvous,
        drain_ops=[infeed.close_op, outfeed.close_op] if closable else (),
        cancel_ops=cancel_ops)
    device_system = hooks_lib.DeviceSystemHook(
        device, close_ops=cancel_ops or (),
        session_config=config.session_config)
    # Order matters. The loop-size hook comes first, so that every later
    # before_run sees this loop's size. At the end, the feeding hook drains
    # and joins its threads, and raises any error they hit, before the
    # checkpoint hook writes the final checkpoint (a failed run saves
    # nothing more); the device system hook comes last, closing the queues
    # for good and shutting the system down once nothing uses them.
    all_hooks = [
        hooks_lib.LoopSizeHook(loop_state, config.iterations_per_loop,
                               device_loop.iterations,
                               device_loop.global_step_after,
                               num_steps=steps, last_step=max_steps),
        feeding,
        hooks_lib.ThroughputHook(self._train_batch_size,
                                 config.log_step_count_steps,
                                 device_loop.global_step_after,
                                 device_loop.last_loss, writer),
        CheckpointHook(self.model_dir, scaffold, device_loop.global_step_after,
                       save_steps=config.save_checkpoints_steps,
                       save_secs=config.save_checkpoints_secs),
    ] + list(device_loop.spec.training_hooks) + user_hooks + [device_system]
    session_config = config.session_config or v1.ConfigProto(
        allow_soft_placement=True)
    tf.io.gfile.makedirs(self.model_dir)
    creator = v1.train.ChiefSessionCreator(
        scaffold=scaffold, checkpoint_dir=self.model_dir,
        config=session_config)
    _run_loops(creator, all_hooks, device_loop.train_op, rendezvous,
               aborts=[feeding.abort, device_system.close])

  def _call_model_fn(self, features, labels, mode, params):
    return _call_with_optional(
        self._model_fn, (features, labels),
        {'mode': mode, 'params': params, 'config': self._config})

  def _scaffold(self, spec, local_init_ops):
    user = spec.scaffold_fn() if spec.scaffold_fn is not None else None
    if user is not None and not isinstance(user, v1.train.Scaffold):
      raise TypeError('scaffold_fn must return a tf.compat.v1.train.Scaffold, '
                      'got %r' % (user,))
    saver = user.saver if user is not None else None
    if saver is None:
      saver = v1.train.Saver(max_to_keep=self._config.keep_checkpoint_max,
                             sharded=True, save_relative_paths=True)
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


def _run_loops(creator, hooks, fetch, rendezvous, aborts):
  """Runs `fetch` once per loop in a MonitoredSession until a hook stops.

  The end of input stops training cleanly (every hook's end() runs). Any
  other error, here or in a controller thread, stops the controllers and
  closes the queues first, then comes out with its original type and
  message.
  """
  def abort():
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
  with session:
    try:
      while not session.should_stop():
        session.run(fetch)
    except BaseException as error:
      if (isinstance(error, tf.errors.OutOfRangeError) and
          rendezvous.error is None):
        raise  # End of input: MonitoredSession ends cleanly, end() runs.
      rendezvous.record('training loop', error)
      abort()
      raise rendezvous.error
