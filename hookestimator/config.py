"""RunConfig: where and how a HookEstimator runs, every field validated."""
import numbers
import os

from hookestimator import cluster as cluster_lib
from hookestimator.compat import v1

DEVICE_KINDS = ('cpu', 'gpu', 'tpu')
# The feeding paths (device_feeds.py): the device loop reads the input itself, or
# an infeed thread fills a queue it reads. A TPU program has only the latter.
FEEDING_PATHS = ('in_loop', 'infeed_thread')
DEFAULT_SAVE_CHECKPOINTS_SECS = 600


def check_positive_int(name, value, allow_none=False):
  """Returns `value` if it is an int > 0; raises naming `name` otherwise."""
  if value is None and allow_none:
    return None
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise TypeError('%s must be a positive integer%s, got %r (%s)' % (
        name, ' or None' if allow_none else '', value, type(value).__name__))
  if value <= 0:
    raise ValueError('%s must be a positive integer, got %r' % (name, value))
  return int(value)


def check_positive_number(name, value):
  """Returns `value` if it is None or a number > 0; raises otherwise."""
  if value is None:
    return None
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    raise TypeError('%s must be a positive number or None, got %r (%s)' % (
        name, value, type(value).__name__))
  if not value > 0:
    raise ValueError('%s must be a positive number, got %r' % (name, value))
  return value


def check_non_negative_number(name, value):
  """Returns `value` if it is a number >= 0; raises naming `name`."""
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    raise TypeError('%s must be a number >= 0, got %r (%s)' % (
        name, value, type(value).__name__))
  if not value >= 0:
    raise ValueError('%s must be a number >= 0, got %r' % (name, value))
  return value


def _model_dir(model_dir, tf_config):
  """model_dir, or TF_CONFIG's "model_dir" when it is None, as Estimator's
  RunConfig takes it; the two must agree when both are given."""
  from_tf_config = tf_config.get('model_dir')
  if from_tf_config is None:
    return model_dir
  if not from_tf_config or not isinstance(from_tf_config, str):
    raise ValueError('model_dir in TF_CONFIG should be non-empty: expected a '
                     'directory path, got %r' % (from_tf_config,))
  if model_dir is None:
    return from_tf_config
  if (isinstance(model_dir, (str, os.PathLike)) and
      os.fspath(model_dir) != from_tf_config):
    raise ValueError(
        'model_dir=%r must have the same value as the model_dir in TF_CONFIG '
        '(%r) when both are set' % (model_dir, from_tf_config))
  return model_dir


def _with_cpu_devices(session_config, count):
  """A copy of `session_config` with at least `count` CPU devices, and soft
  placement as a session with no config has."""
  config = v1.ConfigProto(allow_soft_placement=True)
  if session_config is not None:
    config.CopyFrom(session_config)
  config.device_count['CPU'] = max(count, config.device_count.get('CPU', 1))
  return config


def _cluster_of(value):
  """The cluster that RunConfig(cluster=value) runs on ('' is none)."""
  if value == '':
    return None
  return (cluster_lib.from_environment() if value is None else
          cluster_lib.parse(value, 'RunConfig(cluster=...)'))


class RunConfig(object):
  """Where a HookEstimator keeps its files and how it runs its loops.

  Args:
    model_dir: directory for checkpoints and event files; when None, the
      TF_CONFIG environment variable's "model_dir", else a new temporary
      directory.
    iterations_per_loop: training steps run on the device per session.run
      (with `loop_seconds`, the first loop's steps); the steps of each
      evaluation and prediction loop.
    loop_seconds: when set, training loops are sized from the measured time
      a step takes so that each lasts about this many seconds (TPUConfig's
      `iterations_per_loop='300s'`).
    save_checkpoints_steps: save a checkpoint every this many steps.
    save_checkpoints_secs: or every this many seconds (not both); when
      neither is given, every 600 seconds.
    keep_checkpoint_max: checkpoints kept on disk (0 keeps all).
    log_step_count_steps: log throughput every this many steps.
    session_config: a `tf.compat.v1.ConfigProto`, or None for soft placement.
    device: 'cpu', 'gpu' or 'tpu'.
    check_nan_loss: fail training, naming the step, at the first step whose
      loss is NaN or Inf (CPU and GPU; not inside a TPU program).
    num_replicas: data-parallel replicas of the device loop, one per device
      of `device`'s kind (on CPU, the session gets that many CPU devices).
      The batch sizes are global: each replica's model_fn and input_fn see
      params['batch_size'] = batch size / num_replicas.
    cluster: the cluster this run spans, in TF_CONFIG's format (a dict or
      JSON string with "cluster" and "task"), or a cluster.Cluster; None
      reads the TF_CONFIG environment variable (no cluster when unset).
      num_replicas replicas run on each worker; see docs/cluster.md. An
      `evaluator` task runs outside the training cluster: its config has
      `cluster` None and keeps the cluster as `evaluator`.
    peer_timeout_secs: how long a task of a cluster waits for the others
      to answer when the run starts, before failing with the names of the
      missing tasks.
    feeding: how the device loop gets its batches. 'in_loop' (the default
      on CPU and GPU): the loop reads the dataset's iterator itself, from a
      prefetch buffer filled by tf.data's threads; the fastest path.
      'infeed_thread' (the default, and the only path, on TPU): an infeed
      controller thread fills a queue that the loop reads, as TPUEstimator
      feeds a TPU. On a cluster only 'infeed_thread' (its default there):
      the chief's infeed thread fills each worker's queue.
  """

  def __init__(self,
               model_dir=None,
               iterations_per_loop=2,
               save_checkpoints_steps=None,
               save_checkpoints_secs=None,
               keep_checkpoint_max=5,
               log_step_count_steps=100,
               session_config=None,
               device='cpu',
               check_nan_loss=True,
               num_replicas=1,
               feeding=None,
               cluster=None,
               peer_timeout_secs=60,
               loop_seconds=None):
    model_dir = _model_dir(model_dir, cluster_lib.read_tf_config())
    if model_dir is not None:
      if not isinstance(model_dir, (str, os.PathLike)):
        raise TypeError('model_dir must be a path string or None, got %r' %
                        (model_dir,))
      model_dir = os.fspath(model_dir)
      if not model_dir:
        raise ValueError('model_dir must not be empty; pass None for a '
                         'temporary directory')
    self.model_dir = model_dir
    self.iterations_per_loop = check_positive_int('iterations_per_loop',
                                                  iterations_per_loop)
    self.loop_seconds = check_positive_number('loop_seconds', loop_seconds)
    if save_checkpoints_steps is not None and save_checkpoints_secs is not None:
      raise ValueError(
          'Set save_checkpoints_steps or save_checkpoints_secs, not both; got '
          'save_checkpoints_steps=%r and save_checkpoints_secs=%r' %
          (save_checkpoints_steps, save_checkpoints_secs))
    self.save_checkpoints_steps = check_positive_int(
        'save_checkpoints_steps', save_checkpoints_steps, allow_none=True)
    self.save_checkpoints_secs = check_positive_number(
        'save_checkpoints_secs', save_checkpoints_secs)
    if self.save_checkpoints_steps is None and self.save_checkpoints_secs is None:
      self.save_checkpoints_secs = DEFAULT_SAVE_CHECKPOINTS_SECS
    if (isinstance(keep_checkpoint_max, bool) or
        not isinstance(keep_checkpoint_max, numbers.Integral)):
      raise TypeError('keep_checkpoint_max must be an integer >= 0, got %r' %
                      (keep_checkpoint_max,))
    if keep_checkpoint_max < 0:
      raise ValueError('keep_checkpoint_max must be >= 0 (0 keeps all), got %r'
                       % (keep_checkpoint_max,))
    self.keep_checkpoint_max = int(keep_checkpoint_max)
    self.log_step_count_steps = check_positive_int('log_step_count_steps',
                                                   log_step_count_steps)
    if session_config is not None and not isinstance(session_config,
                                                     v1.ConfigProto):
      raise TypeError('session_config must be a tf.compat.v1.ConfigProto or '
                      'None, got %r' % (type(session_config).__name__,))
    self.session_config = session_config
    if device not in DEVICE_KINDS:
      raise ValueError('device must be one of %s, got %r' %
                       (', '.join(repr(k) for k in DEVICE_KINDS), device))
    self.device = device
    if not isinstance(check_nan_loss, bool):
      raise TypeError('check_nan_loss must be True or False, got %r' %
                      (check_nan_loss,))
    self.check_nan_loss = check_nan_loss
    self.num_replicas = check_positive_int('num_replicas', num_replicas)
    if device == 'tpu' and self.num_replicas > 1:
      raise ValueError(
          "num_replicas=%d cannot be honoured with device='tpu': one TPU "
          'core runs the loop' % self.num_replicas)
    if device == 'cpu' and self.num_replicas > 1:
      self.session_config = _with_cpu_devices(session_config,
                                              self.num_replicas)
    self.cluster = (cluster_lib.from_environment() if cluster is None else
                    cluster_lib.parse(cluster, 'RunConfig(cluster=...)'))
    # An evaluator task evaluates in its own process, as without a cluster;
    # `evaluator` keeps the cluster whose chief it follows.
    self.evaluator = None
    if self.cluster is not None and self.cluster.is_evaluator:
      self.evaluator, self.cluster = self.cluster, None
    if self.cluster is not None and device == 'tpu':
      raise ValueError("a cluster cannot run with device='tpu'; got "
                       'cluster=%r' % (self.cluster,))
    self.peer_timeout_secs = check_positive_number('peer_timeout_secs',
                                                   peer_timeout_secs)
    if self.peer_timeout_secs is None:
      raise ValueError('peer_timeout_secs must be a positive number, got None')
    if feeding is None:
      feeding = ('infeed_thread' if device == 'tpu' or self.cluster is not None
                 else 'in_loop')
    if feeding not in FEEDING_PATHS:
      raise ValueError('feeding must be one of %s, got %r' %
                       (', '.join(repr(p) for p in FEEDING_PATHS), feeding))
    if device == 'tpu' and feeding != 'infeed_thread':
      raise ValueError(
          "feeding=%r cannot be honoured with device='tpu': a TPU program "
          "reads only its hardware infeed, fed by the infeed thread "
          "(feeding='infeed_thread')" % feeding)
    if self.cluster is not None and feeding != 'infeed_thread':
      raise ValueError(
          "feeding=%r cannot be honoured on a cluster: the chief's infeed "
          "thread fills each worker's queue (feeding='infeed_thread')" %
          feeding)
    self.feeding = feeding

  def replace(self, **changes):
    """A copy of this config with `changes` applied (and validated)."""
    fields = dict(
        model_dir=self.model_dir,
        iterations_per_loop=self.iterations_per_loop,
        save_checkpoints_steps=self.save_checkpoints_steps,
        save_checkpoints_secs=(None if self.save_checkpoints_steps else
                               self.save_checkpoints_secs),
        keep_checkpoint_max=self.keep_checkpoint_max,
        log_step_count_steps=self.log_step_count_steps,
        session_config=self.session_config,
        device=self.device,
        check_nan_loss=self.check_nan_loss,
        num_replicas=self.num_replicas,
        feeding=self.feeding,
        cluster=self.cluster or self.evaluator or '',
        peer_timeout_secs=self.peer_timeout_secs,
        loop_seconds=self.loop_seconds)
    moves = (changes.get('device', self.device) != self.device or
             ('cluster' in changes and
              _cluster_of(changes['cluster']) != (self.cluster or
                                                  self.evaluator)))
    fields.update(changes)
    if moves and 'feeding' not in changes:
      # The new device's or cluster's default; the same device keeps the
      # feeding path chosen for it.
      fields['feeding'] = None
    if 'save_checkpoints_steps' in changes and 'save_checkpoints_secs' not in changes:
      fields['save_checkpoints_secs'] = None
    return RunConfig(**fields)

  def __repr__(self):
    return ('RunConfig(model_dir=%r, iterations_per_loop=%d, '
            'save_checkpoints_steps=%r, save_checkpoints_secs=%r, '
            'keep_checkpoint_max=%d, log_step_count_steps=%d, device=%r, '
            'num_replicas=%d, feeding=%r, cluster=%r, loop_seconds=%r)' % (
                self.model_dir, self.iterations_per_loop,
                self.save_checkpoints_steps, self.save_checkpoints_secs,
                self.keep_checkpoint_max, self.log_step_count_steps,
                self.device, self.num_replicas, self.feeding, self.cluster,
                self.loop_seconds))
