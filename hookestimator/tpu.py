"""Drop-in TPUEstimator names: code written for tf.compat.v1.estimator.tpu
runs on hookestimator by changing its import line to

    from hookestimator import tpu

`TPUEstimator`, `TPUEstimatorSpec`, `RunConfig`, `TPUConfig` and
`InputPipelineConfig` take TPUEstimator's arguments. Arguments with no
meaning here (a cluster to connect to, how several hosts split the input)
are accepted and not used; arguments that cannot be honoured (distribution
strategies, several TPU cores, TPU embeddings) raise a ValueError naming
them. docs/tpu.md has the table.
"""
import collections
import copy
import logging
import numbers


from hookestimator import compat
from hookestimator import config as config_lib
from hookestimator import estimator as estimator_lib
from hookestimator import export as export_lib
from hookestimator import spec as spec_lib
from hookestimator.compat import v1

log = logging.getLogger(__name__)

ModeKeys = compat.ModeKeys
# tf.estimator's EstimatorSpec where tensorflow-estimator is installed,
# else hookestimator's; export names (ServingInputReceiver, PredictOutput,
# ...) as tf.estimator.export has them, on every line.
EstimatorSpec = (compat.estimator_types('EstimatorSpec') or
                 (spec_lib.EstimatorSpec,))[0]
WarmStartSettings = (compat.estimator_types('WarmStartSettings') or
                     (compat.WarmStartSettings,))[0]
export = export_lib
_UNSET = object()
RESERVED_PARAMS_KEYS = ('batch_size', 'context')


class InputPipelineConfig(object):
  """TPUEstimator's input pipeline modes. With several replicas, PER_HOST_V1
  splits each input_fn batch over the replicas, PER_HOST_V2 and
  PER_SHARD_V1 give each replica batches of its own; BROADCAST and SLICED
  are refused there (docs/replicas.md)."""
  PER_SHARD_V1 = 1
  PER_HOST_V1 = 2
  PER_HOST_V2 = 3
  BROADCAST = 4
  SLICED = 5


def _reject(name, value, why):
  raise ValueError('%s=%r cannot be honoured: %s' % (name, value, why))


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
  """TPUEstimator's TPUConfig. `iterations_per_loop` is used;
  `num_shards`, `num_cores_per_replica` and `input_partition_dims` are
  checked when the loop runs on a TPU (one core runs it)."""

  def __new__(cls, iterations_per_loop=2, num_shards=None,
              num_cores_per_replica=None, per_host_input_for_training=True,
              tpu_job_name=None, initial_infeed_sleep_secs=None,
              input_partition_dims=None,
              eval_training_input_configuration=(
                  InputPipelineConfig.PER_HOST_V1),
              experimental_host_call_every_n_steps=1,
              experimental_allow_per_host_v2_parallel_get_next=False,
              experimental_feed_hook=None):
    if isinstance(iterations_per_loop, str):
      _reject('iterations_per_loop', iterations_per_loop,
              'loops are counted in steps; give a positive integer')
    config_lib.check_positive_int('iterations_per_loop', iterations_per_loop)
    config_lib.check_positive_int('num_shards', num_shards, allow_none=True)
    config_lib.check_positive_int('num_cores_per_replica',
                                  num_cores_per_replica, allow_none=True)
    if experimental_host_call_every_n_steps != 1:
      _reject('experimental_host_call_every_n_steps',
              experimental_host_call_every_n_steps,
              'host_call runs on every step')
    if experimental_feed_hook is not None:
      _reject('experimental_feed_hook', experimental_feed_hook,
              'the framework feeds the device with its own hook')
    return super(TPUConfig, cls).__new__(
        cls, iterations_per_loop, num_shards, num_cores_per_replica,
        per_host_input_for_training, tpu_job_name, initial_infeed_sleep_secs,
        input_partition_dims, eval_training_input_configuration,
        experimental_host_call_every_n_steps,
        experimental_allow_per_host_v2_parallel_get_next,
        experimental_feed_hook)

  def splits_batches(self, replicas):
    """Whether input_fn's batches are split over `replicas` replicas
    (PER_HOST_V1) rather than each replica reading its own; raises for the
    modes several replicas cannot honour."""
    mode = self.per_host_input_for_training
    if mode is True:
      mode = InputPipelineConfig.PER_HOST_V1
    elif mode is False:
      mode = InputPipelineConfig.PER_SHARD_V1
    if replicas > 1 and mode in (InputPipelineConfig.BROADCAST,
                                 InputPipelineConfig.SLICED):
      _reject('per_host_input_for_training', mode, 'BROADCAST and SLICED '
              'input serve model parallelism; with %d replicas use '
              'PER_HOST_V1 or PER_HOST_V2' % replicas)
    return mode == InputPipelineConfig.PER_HOST_V1

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


class RunConfig(config_lib.RunConfig):
  """TPUEstimator's RunConfig: tf.estimator.RunConfig's arguments plus
  `tpu_config`, `master`, `evaluation_master` and `cluster`."""

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
    if save_checkpoints_steps is _UNSET and save_checkpoints_secs is _UNSET:
      save_checkpoints_steps = None
      save_checkpoints_secs = config_lib.DEFAULT_SAVE_CHECKPOINTS_SECS
    save_checkpoints_steps = (None if save_checkpoints_steps is _UNSET else
                              save_checkpoints_steps)
    save_checkpoints_secs = (None if save_checkpoints_secs is _UNSET else
                             save_checkpoints_secs)
    super(RunConfig, self).__init__(
        model_dir=model_dir,
        iterations_per_loop=tpu_config.iterations_per_loop,
        save_checkpoints_steps=save_checkpoints_steps,
        save_checkpoints_secs=save_checkpoints_secs,
        keep_checkpoint_max=keep_checkpoint_max,
        log_step_count_steps=log_step_count_steps,
        session_config=session_config)
    self.tpu_config = tpu_config
    self.tf_random_seed = tf_random_seed
    self.save_summary_steps = save_summary_steps
    self.master = master
    self.evaluation_master = evaluation_master
    self.cluster = cluster
    if cluster is not None or master or evaluation_master:
      log.info('Ignoring master/evaluation_master/cluster: hookestimator '
               'runs on the devices of this machine')

  def replace(self, **changes):
    """A copy with `changes` applied; keeps the TPU fields."""
    base = super(RunConfig, self).replace(**changes)
    new = copy.copy(self)
    new.__dict__.update(base.__dict__)
    return new


class TPUEstimatorSpec(spec_lib.HookEstimatorSpec):
  """TPUEstimatorSpec's arguments, in its order, as a HookEstimatorSpec."""

  def __new__(cls, mode, predictions=None, loss=None, train_op=None,
              eval_metrics=None, export_outputs=None, scaffold_fn=None,
              host_call=None, training_hooks=None, evaluation_hooks=None,
              prediction_hooks=None):
    return super(TPUEstimatorSpec, cls).__new__(
        cls, mode=mode, loss=loss, train_op=train_op, host_call=host_call,
        training_hooks=training_hooks, scaffold_fn=scaffold_fn,
        predictions=predictions, eval_metrics=eval_metrics,
        export_outputs=export_outputs, evaluation_hooks=evaluation_hooks,
        prediction_hooks=prediction_hooks)


def choose_device(use_tpu, list_devices=None):
  """'tpu' when asked for and present, else 'gpu' when present, else 'cpu'."""
  list_devices = list_devices or compat.physical_devices
  if use_tpu and list_devices('TPU'):
    return 'tpu'
  return 'gpu' if list_devices('GPU') else 'cpu'


def _optional_batch_size(name, value):
  return config_lib.check_positive_int(name, value, allow_none=True)


class TPUEstimator(estimator_lib.HookEstimator):
  """TPUEstimator's constructor and methods on the hookestimator loop.

  `use_tpu=True` runs the loop on a TPU when this machine has one, else on
  its GPUs or CPU with TPUConfig.num_shards replicas; `use_tpu=False` on
  the GPU or CPU, one replica. The choice is logged once. model_fn sees
  params['batch_size'] (the mode's batch over the replicas) and
  params['use_tpu'] (whether it runs on a TPU or on several replicas).
  """

  def __init__(self, model_fn=None, model_dir=None, config=None, params=None,
               use_tpu=True, train_batch_size=None, eval_batch_size=None,
               predict_batch_size=None, batch_axis=None, eval_on_tpu=True,
               export_to_tpu=True, export_to_cpu=True, warm_start_from=None,
               embedding_config_spec=None,
               export_saved_model_api_version=None):
    del batch_axis, export_saved_model_api_version  # One device: no split.
    if config is None:
      config = RunConfig()
    if not isinstance(config, config_lib.RunConfig):
      raise TypeError('config must be a hookestimator.tpu.RunConfig, got %r'
                      % (config,))
    if model_dir is not None:
      if config.model_dir is not None and config.model_dir != str(model_dir):
        raise ValueError('model_dir=%r differs from config.model_dir=%r; '
                         'give one of them' % (model_dir, config.model_dir))
      config = config.replace(model_dir=str(model_dir))
    params = dict(params or {})
    for key in RESERVED_PARAMS_KEYS:
      if key in params:
        raise ValueError('params sets the reserved key %r; TPUEstimator sets '
                         'it' % key)
    if embedding_config_spec is not None:
      _reject('embedding_config_spec', embedding_config_spec,
              'TPU embeddings are not supported')
    if not export_to_cpu:
      _reject('export_to_cpu', export_to_cpu, 'export_saved_model writes a '
              'CPU serving graph')
    train_batch_size = _optional_batch_size('train_batch_size',
                                            train_batch_size)
    eval_batch_size = _optional_batch_size('eval_batch_size',
                                           eval_batch_size) or train_batch_size
    predict_batch_size = _optional_batch_size(
        'predict_batch_size', predict_batch_size) or train_batch_size
    if warm_start_from is not None and not isinstance(
        warm_start_from, (str,) + compat.WARM_START_TYPES):
      raise TypeError('warm_start_from must be a checkpoint path or a '
                      'WarmStartSettings, got %r' %
                      (warm_start_from,))
    device = choose_device(bool(use_tpu))
    replicas = 1
    split_batches = False
    if isinstance(config, RunConfig):
      if device == 'tpu':
        config.tpu_config.check_one_core()
      elif use_tpu:
        # No TPU here: num_shards replicas on the GPUs or CPU devices.
        replicas = config.tpu_config.num_shards or 1
      split_batches = config.tpu_config.splits_batches(replicas)
    else:
      replicas = config.num_replicas
    log.info('TPUEstimator(use_tpu=%r) runs on %s%s', bool(use_tpu), device,
             ' with %d replicas' % replicas if replicas > 1 else '')
    self._eval_device = (device if device != 'tpu' or eval_on_tpu else
                         choose_device(False))
    self._export_to_tpu = export_to_tpu
    self._warm_start_from = warm_start_from
    self._seed = getattr(config, 'tf_random_seed', None)
    super(TPUEstimator, self).__init__(
        model_fn, config=config.replace(device=device, num_replicas=replicas),
        params=params,
        train_batch_size=train_batch_size or 1,
        eval_batch_size=eval_batch_size or 1,
        predict_batch_size=predict_batch_size or 1)
    self._split_batches = split_batches
    # TPUEstimator asks for a batch size only where it is used.
    self._train_batch_size = train_batch_size
    self._eval_batch_size = eval_batch_size
    self._predict_batch_size = predict_batch_size

  def _require_batch_size(self, name, value):
    if value is None:
      raise ValueError('%s needs a batch size: give train_batch_size (or %s) '
                       'to TPUEstimator' % (name, name + '_batch_size'))

  def train(self, input_fn, hooks=None, steps=None, max_steps=None,
            saving_listeners=None):
    if saving_listeners:
      _reject('saving_listeners', saving_listeners, 'checkpoints are saved by '
              'the framework\'s hook; use a SessionRunHook')
    self._require_batch_size('train', self._train_batch_size)
    return super(TPUEstimator, self).train(input_fn, steps=steps,
                                           max_steps=max_steps, hooks=hooks)

  def evaluate(self, input_fn, steps=None, hooks=None, checkpoint_path=None,
               name=None):
    self._require_batch_size('eval', self._eval_batch_size)
    target = self
    if self._eval_device != self._config.device:
      # The same estimator, evaluating on another device.
      target = copy.copy(self)
      target._config = self._config.replace(device=self._eval_device)
    return super(TPUEstimator, target).evaluate(
        input_fn, steps=steps, hooks=hooks, checkpoint_path=checkpoint_path,
        name=name)

  def predict(self, input_fn, predict_keys=None, hooks=None,
              checkpoint_path=None, yield_single_examples=True):
    self._require_batch_size('predict', self._predict_batch_size)
    return super(TPUEstimator, self).predict(
        input_fn, predict_keys=predict_keys, hooks=hooks,
        checkpoint_path=checkpoint_path,
        yield_single_examples=yield_single_examples)

  def export_saved_model(self, export_dir_base, serving_input_receiver_fn,
                         assets_extra=None, as_text=False,
                         checkpoint_path=None, experimental_mode=None):
    if experimental_mode not in (None, ModeKeys.PREDICT):
      _reject('experimental_mode', experimental_mode, 'only the PREDICT '
              'serving graph is exported')
    if self._export_to_tpu and self._config.device == 'tpu':
      log.info('export_to_tpu: exporting a CPU serving graph only')
    return super(TPUEstimator, self).export_saved_model(
        export_dir_base, serving_input_receiver_fn, assets_extra=assets_extra,
        as_text=as_text, checkpoint_path=checkpoint_path)

  export_savedmodel = export_saved_model

  def _set_seed(self):
    if self._seed is not None and v1.get_default_graph().seed is None:
      v1.set_random_seed(self._seed)

  def _call_input_fn(self, input_fn, params):
    self._set_seed()  # input_fn is the first user code in a new graph
    return super(TPUEstimator, self)._call_input_fn(input_fn, params)

  def _call_model_fn(self, features, labels, mode, params):
    self._set_seed()  # export calls model_fn first
    # True also while several replicas run, so that a program wrapping its
    # optimizer in CrossShardOptimizer only on a TPU sums its gradients.
    params = dict(params, use_tpu=(self._config.device == 'tpu' or
                                   self._config.num_replicas > 1))
    spec = spec_lib.as_hook_spec(super(TPUEstimator, self)._call_model_fn(
        features, labels, mode, params))
    if mode == ModeKeys.TRAIN and self._warm_start_from is not None:
      spec = spec._replace(scaffold_fn=_warm_starting(self._warm_start_from,
                                                      spec.scaffold_fn))
    return spec


def _warm_starting(warm_start_from, scaffold_fn):
  """A scaffold_fn that first points the variables' initialisers at the
  warm-start checkpoint (used only where model_dir has no checkpoint)."""
  def warm_scaffold_fn():
    settings = warm_start_from
    if isinstance(settings, str):
      settings = WarmStartSettings(settings)
    v1.train.warm_start(
        settings.ckpt_to_initialize_from,
        vars_to_warm_start=settings.vars_to_warm_start,
        var_name_to_vocab_info=settings.var_name_to_vocab_info,
        var_name_to_prev_var_name=settings.var_name_to_prev_var_name)
    return scaffold_fn() if scaffold_fn is not None else None
  return warm_scaffold_fn
