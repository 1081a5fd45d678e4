"""Drop-in TPUEstimator names: code written for tf.compat.v1.estimator.tpu
runs on hookestimator by changing its import line to

    from hookestimator import tpu

and a TF 1 program's TPU module, tf.contrib.tpu, may be swapped for this
one as a whole.

`TPUEstimator`, `TPUEstimatorSpec`, `RunConfig`, `TPUConfig` and
`InputPipelineConfig` (tpu_config.py) take TPUEstimator's arguments.
Arguments with no meaning here (a cluster to connect to, how several hosts
split the input) are accepted and not used; arguments that cannot be
honoured (distribution strategies, several TPU cores, TPU embeddings)
raise a ValueError naming them. docs/tpu.md has the table.

The TPU names a program uses inside model_fn (`CrossShardOptimizer`,
`cross_replica_sum`, `bfloat16_scope`, `outside_compilation`, `rewrite`,
`shard`, ...) are TensorFlow's own objects, as this TensorFlow line has
them (compat.tpu_program_names); they work on hookestimator's replicas.
"""
import copy
import logging
import numbers

from hookestimator import compat
from hookestimator import config as config_lib
from hookestimator import device_feeds
from hookestimator import estimator as estimator_lib
from hookestimator import export as export_lib
from hookestimator import replicas as replicas_lib
from hookestimator import spec as spec_lib
from hookestimator import tpu_config
from hookestimator import tpu_context
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
InputPipelineConfig = tpu_config.InputPipelineConfig
TPUConfig = tpu_config.TPUConfig
RunConfig = tpu_config.RunConfig
RESERVED_PARAMS_KEYS = ('batch_size', 'context')
_reject = tpu_config._reject  # pylint: disable=protected-access

# TensorFlow's own TPU names, where this line has them.
globals().update(compat.tpu_program_names())

# tf.contrib.tpu's names that only a TPU system gives meaning to: its
# feeds, topology and Keras conversion. Asking for one says why it is not
# here.
_TPU_SYSTEM_NAMES = (
    'DeviceAssignment', 'InfeedQueue', 'TPUDistributionStrategy', 'Topology',
    'device_assignment', 'export_estimator_savedmodel', 'infeed_dequeue',
    'infeed_dequeue_tuple', 'infeed_enqueue', 'infeed_enqueue_tuple',
    'keras_to_tpu_model', 'outfeed_dequeue', 'outfeed_dequeue_tuple',
    'outfeed_enqueue', 'outfeed_enqueue_tuple', 'profiler')


def __getattr__(name):
  if name in _TPU_SYSTEM_NAMES:
    raise AttributeError(
        "hookestimator.tpu has no %r: tf.contrib.tpu's %s drives a TPU "
        'system itself, and hookestimator feeds and places the model' %
        (name, name))
  if name == 'AsyncCheckpointSaverHook':
    raise AttributeError(
        'hookestimator.tpu has no AsyncCheckpointSaverHook on TensorFlow %s: '
        'TensorFlow dropped it after 2.15; hookestimator writes its own '
        'checkpoints off the training thread (RunConfig('
        'save_checkpoints_steps))' % '.'.join(map(str, compat.TF_VERSION)))
  raise AttributeError('module %r has no attribute %r' % (__name__, name))


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
  if value is None:
    return None
  return tpu_config.check_positive_integer(value, name)


def _check_steps(mode, name, value):
  """`value` (None, or a number of steps > 0), else raises with
  TPUEstimator's and Estimator's phrases."""
  if value is None or isinstance(value, bool):
    return value  # HookEstimator refuses a bool, naming it.
  if not isinstance(value, numbers.Integral):
    raise TypeError('%s %s must be int (a positive integer), got %r (%s)' % (
        mode, name, value, type(value).__name__))
  if value <= 0:
    raise ValueError('Must specify %s > 0, given: %r (%s %s must be '
                     'positive)' % (name, value, mode, name))
  return value


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
        raise ValueError('params sets %r: %s are reserved keys, which '
                         'TPUEstimator sets' % (key, list(RESERVED_PARAMS_KEYS)))
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
    if use_tpu and train_batch_size is None:
      raise ValueError('`train_batch_size` cannot be `None` with use_tpu=True '
                       '(as TPUEstimator requires): give train_batch_size')
    device = choose_device(bool(use_tpu))
    replicas = 1
    layouts = {}  # By batch name; each replica its own batches by default.
    if isinstance(config, RunConfig):
      if use_tpu and config.tpu_config.num_cores_per_replica and (
          config.tpu_config.per_host_input_for_training ==
          InputPipelineConfig.PER_SHARD_V1):
        raise ValueError(
            'Model parallelism only supports per host input for training: '
            'num_cores_per_replica=%r needs per_host_input_for_training '
            'PER_HOST_V1 or PER_HOST_V2, got PER_SHARD_V1' %
            config.tpu_config.num_cores_per_replica)
      if device == 'tpu':
        config.tpu_config.check_one_core()
      elif use_tpu:
        # No TPU here: num_shards replicas on the GPUs or CPU devices.
        replicas = config.tpu_config.num_shards or 1
      layouts = {
          name: config.tpu_config.input_layout(
              replicas, training=name == 'train_batch_size')
          for name in ('train_batch_size', 'eval_batch_size',
                       'predict_batch_size')}
    else:
      replicas = config.num_replicas
    log.info('TPUEstimator(use_tpu=%r) runs on %s%s', bool(use_tpu), device,
             ' with %d replicas' % replicas if replicas > 1 else '')
    # TPUEstimator evaluates model_fn as a TPU program when both are true.
    self._evaluates_as_tpu = bool(use_tpu) and bool(eval_on_tpu)
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
    self._layouts = layouts
    # TPUEstimator asks for a batch size only where it is used.
    self._train_batch_size = train_batch_size
    self._eval_batch_size = eval_batch_size
    self._predict_batch_size = predict_batch_size

  def _check_batch_size(self, name, value):
    """Raises unless `value` is a batch size the replicas divide, before
    input_fn is called, as TPUEstimator checks it."""
    if value is None:
      raise ValueError('%s needs a batch size: `%s_batch_size` cannot be '
                       '`None`; give train_batch_size (or %s_batch_size) to '
                       'TPUEstimator' % (name, name, name))
    replicas_lib.per_replica_batch(name + '_batch_size', value,
                               self._config.num_replicas)

  def train(self, input_fn, hooks=None, steps=None, max_steps=None,
            saving_listeners=None):
    if saving_listeners:
      _reject('saving_listeners', saving_listeners, 'checkpoints are saved by '
              'the framework\'s hook; use a SessionRunHook')
    steps = _check_steps('train', 'steps', steps)
    max_steps = _check_steps('train', 'max_steps', max_steps)
    self._check_batch_size('train', self._train_batch_size)
    return super(TPUEstimator, self).train(input_fn, steps=steps,
                                           max_steps=max_steps, hooks=hooks)

  def evaluate(self, input_fn, steps=None, hooks=None, checkpoint_path=None,
               name=None):
    steps = _check_steps('eval', 'steps', steps)
    self._check_batch_size('eval', self._eval_batch_size)
    changes = {}
    if self._eval_device != self._config.device:
      changes['device'] = self._eval_device
    if not self._evaluates_as_tpu and self._config.num_replicas > 1:
      # eval_on_tpu=False: TPUEstimator evaluates model_fn once, on the
      # CPU, over the whole batch.
      changes['num_replicas'] = 1
    if self._config.loop_seconds is not None and steps:
      # Loops sized by time: as TPUEstimator on a TPU, the evaluation's
      # steps run in one loop.
      changes['iterations_per_loop'] = steps
    target = self
    if changes:
      # The same estimator, evaluating on another device or loop size.
      target = copy.copy(self)
      target._config = self._config.replace(**changes)
    return super(TPUEstimator, target).evaluate(
        input_fn, steps=steps, hooks=hooks, checkpoint_path=checkpoint_path,
        name=name)

  def predict(self, input_fn, predict_keys=None, hooks=None,
              checkpoint_path=None, yield_single_examples=True):
    self._check_batch_size('predict', self._predict_batch_size)
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

  def _call_input_fn(self, input_fn, params, call=None):
    self._set_seed()  # input_fn is the first user code in a new graph
    if call is not None and self._runs_as_tpu_program():
      params = dict(params, context=self._context(call))
    return super(TPUEstimator, self)._call_input_fn(input_fn, params)

  def _call_model_fn(self, features, labels, mode, params):
    self._set_seed()  # export calls model_fn first
    params = dict(params, use_tpu=self._runs_as_tpu_program())
    if params['use_tpu']:
      params['context'] = self._context()
    spec = super(TPUEstimator, self)._call_model_fn(
        features, labels, mode, params)
    if (mode == ModeKeys.EVAL and self._evaluates_as_tpu and
        isinstance(spec, spec_lib.ESTIMATOR_SPEC_TYPES) and
        spec.eval_metric_ops):
      raise RuntimeError(
          'estimator_spec used by TPU evaluation must have type'
          '`TPUEstimatorSpec`. Got %s with eval_metric_ops %s: return '
          'TPUEstimatorSpec(eval_metrics=(metric_fn, tensors))' %
          (type(spec).__name__, sorted(spec.eval_metric_ops)))
    spec = spec_lib.as_hook_spec(spec)
    if mode == ModeKeys.TRAIN and self._warm_start_from is not None:
      spec = spec._replace(scaffold_fn=_warm_starting(self._warm_start_from,
                                                      spec.scaffold_fn))
    return spec

  def _runs_as_tpu_program(self):
    """Whether model_fn runs as TPUEstimator runs it with use_tpu=True (on
    a TPU, or as several replicas off one): params['use_tpu'] is then True
    and params['context'] is given, so that a program wrapping its
    optimizer in CrossShardOptimizer only on a TPU sums its gradients."""
    return self._config.device == 'tpu' or self._config.num_replicas > 1

  def _context(self, call=None):
    """params['context']: a TPUContext of this run's replicas, for the
    input_fn call `call`, or for model_fn."""
    cluster = self._config.cluster
    hosts = cluster.num_workers if cluster is not None else 1

    def host_device(host):
      return (cluster.host_device(host) if cluster is not None else
              device_feeds.HOST_DEVICE)
    return tpu_context.TPUContext(self._config.num_replicas * hosts, hosts,
                                  host_device, call)

  def _input_layout(self, batch_name):
    return self._layouts.get(batch_name, replicas_lib.EACH)

  def _replica_plan(self, global_batch, name, cluster=None):
    if name == 'eval_batch_size' and not self._evaluates_as_tpu:
      # eval_on_tpu=False: TPUEstimator evaluates model_fn once, on the
      # CPU, over the whole batch; also in train_and_evaluate's rounds.
      return replicas_lib.Plan(self._eval_device, 1, global_batch, name)
    return super(TPUEstimator, self)._replica_plan(global_batch, name,
                                                   cluster)

  def _call_model_fn_for_export(self, features):
    # As TPUEstimator exports its CPU graph: params are the program's own
    # with use_tpu False, and no batch_size (a serving batch has any size).
    self._set_seed()
    return estimator_lib.HookEstimator._call_model_fn(  # pylint: disable=protected-access
        self, features, None, ModeKeys.PREDICT,
        dict(self.params, use_tpu=False))


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
