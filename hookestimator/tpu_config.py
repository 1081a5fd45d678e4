"""TPUEstimator's configuration for the drop-in (hookestimator.tpu):
`TPUConfig`, `RunConfig` and `InputPipelineConfig`, checked as
TPUEstimator checks them, with its error types and phrases.

- `TPUConfig(iterations_per_loop)` is a number of steps, or a time
  (`'300s'`, `'60m'`, `'1h'`): then each training loop is sized from the
  measured time of a step to last about that long (hooks.StepTimeSizer).
- `RunConfig(master, evaluation_master, cluster)`: the masters are set as
  TPUEstimator's RunConfig sets them, from the arguments, a cluster
  resolver's `master()`, or TF_CONFIG's `session_master` and
  `eval_session_master`; the resolver is kept as `cluster_resolver`.
  None of them is connected to: the model runs on this machine's devices.
"""
import collections
import copy
import logging
import numbers
import re

from hookestimator import cluster as cluster_lib
from hookestimator import config as config_lib
from hookestimator import replicas as replicas_lib

log = logging.getLogger(__name__)

_UNSET = object()
# The cores of a model-parallel replica that TPUConfig accepts.
NUM_CORES_PER_REPLICA = (1, 2, 4, 8, 16, 32, 64, 128)
_LOOP_LENGTH = re.compile(r'^(?P<value>[1-9][0-9]*)(?P<unit>[smh]?)$')
_SECONDS_PER_UNIT = {'s': 1, 'm': 60, 'h': 3600}

# A loop's length: `value` steps (unit 'count') or seconds ('seconds').
LoopLength = collections.namedtuple('LoopLength', ['value', 'unit'])


def parse_iterations_per_loop(iterations_per_loop):
  """TPUConfig's `iterations_per_loop` as a LoopLength: a positive number
  of steps (an int, or its digits), or a time `<N><s|m|h>`."""
  match = _LOOP_LENGTH.match(str(iterations_per_loop))
  if match is None:
    raise ValueError(
        'Invalid TPUConfig `iterations_per_loop` value %r: it must be '
        'positive, a number of steps or a time `<N><s|m|h>` such as '
        "'300s', '60m' or '1h'" % (iterations_per_loop,))
  value = int(match.group('value'))
  if not match.group('unit'):
    return LoopLength(value, 'count')
  return LoopLength(value * _SECONDS_PER_UNIT[match.group('unit')],
                    'seconds')


def check_positive_integer(value, name):
  """Returns `value` if it is an integer > 0; raises TPUEstimator's errors
  (TypeError 'must be int', ValueError 'must be positive') otherwise."""
  if not isinstance(value, numbers.Integral):
    raise TypeError('%s must be int (a positive integer), got %r (%s)' % (
        name, value, type(value).__name__))
  if value <= 0:
    raise ValueError('%s must be positive, got %r' % (name, value))
  return int(value)


def _reject(name, value, why):
  raise ValueError('%s=%r cannot be honoured: %s' % (name, value, why))


class InputPipelineConfig(object):
  """TPUEstimator's input pipeline modes. With several replicas, PER_HOST_V1
  splits each input_fn batch over the replicas, PER_HOST_V2 gives each
  replica batches of its own, and PER_SHARD_V1 calls input_fn once per
  replica in training; BROADCAST and SLICED are refused there
  (docs/replicas.md)."""
  PER_SHARD_V1 = 1
  PER_HOST_V1 = 2
  PER_HOST_V2 = 3
  BROADCAST = 4
  SLICED = 5


def _tpu_job_name_from_tf_config():
  service = cluster_lib.read_tf_config().get('service') or {}
  return service.get('tpu_worker_job_name')


class TPUConfig(
    collections.namedtuple('TPUConfig', [
        'iterations_per_loop', 'num_shards', 'num_cores_per_replica',
        'per_host_input_for_training', 'tpu_job_name',
        'initial_infeed_sleep_secs', 'input_partition_dims',
        'eval_training_input_configuration',
        'experimental_host_call_every_n_steps',
        'experimental_allow_per_host_v2_parallel_get_next',
        'experimental_feed_hook'
    ])):
  """TPUEstimator's TPUConfig, validated as TPUEstimator validates it.

  `iterations_per_loop` is used (steps, or a time); `num_shards` gives the
  replicas off a TPU; `num_cores_per_replica` and `input_partition_dims`
  are checked, and refused when the loop runs on a TPU (one core runs it).
  `per_host_input_for_training` True / False is kept as PER_HOST_V1 /
  PER_SHARD_V1, and `tpu_job_name` defaults to TF_CONFIG's
  service.tpu_worker_job_name, as TPUEstimator's TPUConfig does.
  """

  def __new__(cls, iterations_per_loop=2, num_shards=None,
              num_cores_per_replica=None, per_host_input_for_training=True,
              tpu_job_name=None, initial_infeed_sleep_secs=None,
              input_partition_dims=None,
              eval_training_input_configuration=(
                  InputPipelineConfig.PER_HOST_V1),
              experimental_host_call_every_n_steps=1,
              experimental_allow_per_host_v2_parallel_get_next=False,
              experimental_feed_hook=None):
    parse_iterations_per_loop(iterations_per_loop)
    if num_shards is not None:
      check_positive_integer(num_shards, 'TPUConfig num_shards')
    if input_partition_dims is not None:
      if (not isinstance(input_partition_dims, (list, tuple)) or
          len(input_partition_dims) not in (1, 2)):
        raise ValueError('input_partition_dims must be a list/tuple with one '
                         'or two elements (the features\' and the labels\' '
                         'partitions), got %r' % (input_partition_dims,))
      if per_host_input_for_training != InputPipelineConfig.PER_HOST_V2:
        raise ValueError(
            'input_partition_dims is only supported in PER_HOST_V2 mode; got '
            'input_partition_dims=%r with per_host_input_for_training=%r' %
            (input_partition_dims, per_host_input_for_training))
      if num_cores_per_replica is None:
        raise ValueError('input_partition_dims requires setting '
                         'num_cores_per_replica; input_partition_dims is %r' %
                         (input_partition_dims,))
    if (num_cores_per_replica is not None and
        num_cores_per_replica not in NUM_CORES_PER_REPLICA):
      raise ValueError('num_cores_per_replica must be %s; got %s' % (
          ', '.join(str(n) for n in NUM_CORES_PER_REPLICA),
          num_cores_per_replica))
    if eval_training_input_configuration not in (
        InputPipelineConfig.PER_HOST_V1, InputPipelineConfig.SLICED):
      raise ValueError('eval_training_input_configuration must be PER_HOST_V1 '
                       'or SLICED; got %s' % eval_training_input_configuration)
    if per_host_input_for_training is False:
      per_host_input_for_training = InputPipelineConfig.PER_SHARD_V1
    elif per_host_input_for_training is True:
      per_host_input_for_training = InputPipelineConfig.PER_HOST_V1
    if initial_infeed_sleep_secs:
      check_positive_integer(initial_infeed_sleep_secs,
                             'TPUConfig initial_infeed_sleep_secs')
    if experimental_host_call_every_n_steps != 1:
      _reject('experimental_host_call_every_n_steps',
              experimental_host_call_every_n_steps,
              'host_call runs on every step')
    if experimental_feed_hook is not None:
      _reject('experimental_feed_hook', experimental_feed_hook,
              'the framework feeds the device with its own hook')
    tpu_job_name = tpu_job_name or _tpu_job_name_from_tf_config()
    return super(TPUConfig, cls).__new__(
        cls, iterations_per_loop, num_shards, num_cores_per_replica,
        per_host_input_for_training, tpu_job_name, initial_infeed_sleep_secs,
        input_partition_dims, eval_training_input_configuration,
        experimental_host_call_every_n_steps,
        experimental_allow_per_host_v2_parallel_get_next,
        experimental_feed_hook)

  @property
  def loop_length(self):
    """iterations_per_loop as a LoopLength (steps or seconds)."""
    return parse_iterations_per_loop(self.iterations_per_loop)

  def input_layout(self, replicas, training=True):
    """How input_fn's batches reach `replicas` replicas (replicas.SPLIT,
    EACH or PER_REPLICA): in training, PER_HOST_V1 splits each batch,
    PER_HOST_V2 gives each replica batches of its own, and PER_SHARD_V1
    calls input_fn once per replica; in evaluation and prediction every
    mode but PER_HOST_V2 splits, as TPUEstimator reads PER_SHARD_V1 input
    per core in training only. Raises for the modes several replicas
    cannot honour."""
    mode = self.per_host_input_for_training
    if replicas > 1 and mode in (InputPipelineConfig.BROADCAST,
                                 InputPipelineConfig.SLICED):
      _reject('per_host_input_for_training', mode, 'BROADCAST and SLICED '
              'input serve model parallelism; with %d replicas use '
              'PER_HOST_V1 or PER_HOST_V2' % replicas)
    if mode == InputPipelineConfig.PER_HOST_V2:
      return replicas_lib.EACH
    if training and mode == InputPipelineConfig.PER_SHARD_V1:
      return replicas_lib.PER_REPLICA
    return replicas_lib.SPLIT

  def check_one_core(self):
    """Raises if this config needs more than the one TPU core that runs
    the loop."""
    if self.num_shards not in (None, 1):
      _reject('num_shards', self.num_shards, 'hookestimator runs the loop '
              'on one TPU core; set num_shards=1 (or None)')
    if self.num_cores_per_replica not in (None, 1):
      _reject('num_cores_per_replica', self.num_cores_per_replica,
              'model parallelism is not supported; one core runs the loop')
    if self.input_partition_dims is not None:
      _reject('input_partition_dims', self.input_partition_dims,
              'spatial partitioning is not supported')


def masters_from_tf_config(tf_config):
  """(master, evaluation master, task type) as Estimator's RunConfig reads
  them from TF_CONFIG: session_master and eval_session_master; with a
  cluster of several tasks, this task's gRPC address (an evaluator's is
  local, '')."""
  task = tf_config.get('task') or {}
  task_type = task.get('type')
  jobs = tf_config.get('cluster') or {}
  eval_master = tf_config.get('eval_session_master', '')
  if not jobs:
    return tf_config.get('session_master', ''), eval_master, task_type
  if task_type == 'evaluator':
    return '', eval_master, task_type
  if 'session_master' in tf_config:
    return tf_config['session_master'], '', task_type
  if sum(len(addresses) for addresses in jobs.values()) == 1:
    return '', '', task_type
  index = task.get('index', 0)
  addresses = jobs.get(task_type) or ()
  if not isinstance(index, int) or not 0 <= index < len(addresses):
    raise ValueError('TF_CONFIG\'s task %r is not a task of its cluster %r' %
                     (task, jobs))
  return 'grpc://' + addresses[index], '', task_type


def _check_resolver(cluster):
  if cluster is not None and not (callable(getattr(cluster, 'master', None))
                                  and callable(getattr(cluster,
                                                       'cluster_spec', None))):
    raise TypeError(
        'cluster must be a cluster resolver (tf.distribute.cluster_resolver.'
        'TPUClusterResolver or another ClusterResolver, with master() and '
        'cluster_spec()), got %r' % (cluster,))
  return cluster


class RunConfig(config_lib.RunConfig):
  """TPUEstimator's RunConfig: tf.estimator.RunConfig's arguments plus
  `tpu_config`, `master`, `evaluation_master` and `cluster` (a cluster
  resolver, kept as `cluster_resolver`; `cluster` is hookestimator's own
  cluster, which a TPU program never has)."""

  def __init__(self, tpu_config=None, evaluation_master=None, master=None,
               cluster=None, model_dir=None, tf_random_seed=None,
               save_summary_steps=100, save_checkpoints_steps=_UNSET,
               save_checkpoints_secs=_UNSET, session_config=None,
               keep_checkpoint_max=5, keep_checkpoint_every_n_hours=10000,
               log_step_count_steps=100, train_distribute=None,
               device_fn=None, protocol=None, eval_distribute=None,
               experimental_distribute=None,
               experimental_max_worker_delay_secs=None,
               session_creation_timeout_secs=7200,
               checkpoint_save_graph_def=True):
    if tpu_config is None:
      tpu_config = TPUConfig()
    if not isinstance(tpu_config, TPUConfig):
      raise TypeError('tpu_config must be a hookestimator.tpu.TPUConfig, got '
                      '%r' % (tpu_config,))
    for name, value in (('train_distribute', train_distribute),
                        ('eval_distribute', eval_distribute),
                        ('experimental_distribute', experimental_distribute),
                        ('device_fn', device_fn)):
      if value is not None:
        _reject(name, value, 'hookestimator places the model itself and '
                'runs no distribution strategy')
    if keep_checkpoint_every_n_hours != 10000:
      _reject('keep_checkpoint_every_n_hours', keep_checkpoint_every_n_hours,
              'checkpoints are kept by keep_checkpoint_max only')
    if checkpoint_save_graph_def is not True:
      _reject('checkpoint_save_graph_def', checkpoint_save_graph_def,
              'the graph is always saved with the first checkpoint')
    if tf_random_seed is not None and (
        isinstance(tf_random_seed, bool) or
        not isinstance(tf_random_seed, numbers.Integral)):
      raise TypeError('tf_random_seed must be an integer or None, got %r' %
                      (tf_random_seed,))
    _check_resolver(cluster)
    if master is not None and cluster is not None:
      raise ValueError('Both master and cluster are set: give master=%r or '
                       'the cluster resolver %r, not both' % (master, cluster))
    if (cluster is not None and session_config is not None and
        session_config.HasField('cluster_def')):
      raise ValueError('You cannot provide a ClusterResolver and '
                       'session_config.cluster_def: the resolver names the '
                       'cluster')
    if save_checkpoints_steps is _UNSET and save_checkpoints_secs is _UNSET:
      save_checkpoints_steps = None
      save_checkpoints_secs = config_lib.DEFAULT_SAVE_CHECKPOINTS_SECS
    save_checkpoints_steps = (None if save_checkpoints_steps is _UNSET else
                              save_checkpoints_steps)
    save_checkpoints_secs = (None if save_checkpoints_secs is _UNSET else
                             save_checkpoints_secs)
    super(RunConfig, self).__init__(
        model_dir=model_dir,
        save_checkpoints_steps=save_checkpoints_steps,
        save_checkpoints_secs=save_checkpoints_secs,
        keep_checkpoint_max=keep_checkpoint_max,
        log_step_count_steps=log_step_count_steps,
        session_config=session_config,
        # A TPU program's cluster is its TPU's, named by the resolver.
        cluster='',
        **_loop_fields(tpu_config))
    self.tpu_config = tpu_config
    self.tf_random_seed = tf_random_seed
    self.save_summary_steps = save_summary_steps
    self.cluster_resolver = cluster
    env_master, env_eval_master, task_type = masters_from_tf_config(
        cluster_lib.read_tf_config())
    if master is not None:
      self.master = master
    elif cluster is not None:
      self.master = cluster.master()
    else:
      self.master = env_master
    if evaluation_master is not None:
      self.evaluation_master = evaluation_master
    elif not env_eval_master and task_type != 'evaluator':
      self.evaluation_master = self.master
    else:
      self.evaluation_master = env_eval_master
    if cluster is not None or self.master or self.evaluation_master:
      log.info('The model runs on the devices of this machine: master=%r, '
               'evaluation_master=%r and the cluster resolver are not '
               'connected to', self.master, self.evaluation_master)

  def replace(self, **changes):
    """A copy with `changes` applied (tpu_config among them); keeps the TPU
    fields."""
    tpu_config = changes.pop('tpu_config', self.tpu_config)
    if not isinstance(tpu_config, TPUConfig):
      raise TypeError('tpu_config must be a hookestimator.tpu.TPUConfig, got '
                      '%r' % (tpu_config,))
    own = {name: changes.pop(name) for name in ('tf_random_seed',
                                                'save_summary_steps')
           if name in changes}
    if tpu_config is not self.tpu_config:
      changes.update(_loop_fields(tpu_config))
    base = super(RunConfig, self).replace(**changes)
    new = copy.copy(self)
    new.__dict__.update(base.__dict__)
    new.__dict__.update(own)
    new.tpu_config = tpu_config
    return new


def _loop_fields(tpu_config):
  """The base RunConfig's loop fields for tpu_config's iterations_per_loop:
  that many steps, or a first loop of one step and loops of that many
  seconds (evaluation and prediction run one step a loop)."""
  length = tpu_config.loop_length
  if length.unit == 'seconds':
    return dict(iterations_per_loop=1, loop_seconds=length.value)
  return dict(iterations_per_loop=length.value, loop_seconds=None)
