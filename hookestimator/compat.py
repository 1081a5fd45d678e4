"""The few differences between TensorFlow 1.15 and 2.x, in one place.

Everything else in the package is written against `tf.compat.v1` and runs
unchanged on both lines.
"""
import collections

import tensorflow as tf
from tensorflow.python.ops import summary_ops_v2
from tensorflow.python.tpu import training_loop
from tensorflow.python.saved_model.model_utils import export_output
from tensorflow.python.saved_model.model_utils import mode_keys

v1 = tf.compat.v1

TF_VERSION = tuple(int(part) for part in tf.__version__.split('.')[:2])
IS_TF2 = TF_VERSION >= (2, 0)

# tensorflow-estimator ended with TF 2.15; on later lines (and wherever it
# is not installed) hookestimator provides the few Estimator names that
# programs use. Where it exists, its classes are accepted too.
try:
  import tensorflow_estimator  # pylint: disable=unused-import
  ESTIMATOR = v1.estimator
except ImportError:
  ESTIMATOR = None

# The mode strings ('train', 'eval', 'infer'): TF's own class, which
# tf.estimator.ModeKeys also is on the lines that have it.
ModeKeys = mode_keys.EstimatorModeKeys

# TensorFlow's own export outputs, which tf.estimator.export re-exports.
ExportOutput = export_output.ExportOutput
PredictOutput = export_output.PredictOutput
ClassificationOutput = export_output.ClassificationOutput
RegressionOutput = export_output.RegressionOutput


def estimator_types(name):
  """tf.estimator's classes named `name` (a dotted path under
  tf.compat.v1.estimator) as a tuple: empty without tensorflow-estimator."""
  if ESTIMATOR is None:
    return ()
  value = ESTIMATOR
  for part in name.split('.'):
    value = getattr(value, part)
  return (value,)


_WarmStartSettings = collections.namedtuple('WarmStartSettings', [
    'ckpt_to_initialize_from', 'vars_to_warm_start',
    'var_name_to_vocab_info', 'var_name_to_prev_var_name'])


class WarmStartSettings(_WarmStartSettings):
  """tf.estimator.WarmStartSettings' fields, for lines without it."""

  def __new__(cls, ckpt_to_initialize_from, vars_to_warm_start='.*',
              var_name_to_vocab_info=None, var_name_to_prev_var_name=None):
    if not ckpt_to_initialize_from:
      raise ValueError('WarmStartSettings needs ckpt_to_initialize_from, a '
                       'checkpoint path or directory, got %r' %
                       (ckpt_to_initialize_from,))
    return super(WarmStartSettings, cls).__new__(
        cls, ckpt_to_initialize_from, vars_to_warm_start,
        var_name_to_vocab_info or {}, var_name_to_prev_var_name or {})


WARM_START_TYPES = (WarmStartSettings,) + estimator_types('WarmStartSettings')

# The base class of every dataset on both lines (DatasetV1 derives from it).
DatasetBase = tf.compat.v2.data.Dataset


def summary_writer_init_ops():
  """Initialisers of the tf.summary (v2-style) writers built in the graph.

  A host_call written TPUEstimator-style creates its own writer; these ops
  open its event files.
  """
  return summary_ops_v2.summary_writer_initializer_op()


def summary_writer_flush_ops(init_ops):
  """Flush ops for the writers whose initialisers are `init_ops`."""
  return [tf.raw_ops.FlushSummaryWriter(writer=op.inputs[0]) for op in init_ops]


def physical_devices(kind):
  """Names of the local physical devices of `kind` ('CPU', 'GPU', 'TPU')."""
  return [d.name for d in tf.config.experimental.list_physical_devices(kind)]


# tf.data's ExternalStatePolicy.FAIL: an input pipeline with stateful ops
# (random numbers drawn in a map) cannot be saved exactly, so saving fails.
_FAIL_ON_EXTERNAL_STATE = 2


def serialize_iterator(iterator_resource):
  """The iterator's state as a variant tensor; running it fails for
  pipelines whose state cannot be saved (TF 1.15 always fails for them;
  TF 2.x is told to)."""
  if IS_TF2:
    return tf.raw_ops.SerializeIterator(
        resource_handle=iterator_resource,
        external_state_policy=_FAIL_ON_EXTERNAL_STATE)
  return tf.raw_ops.SerializeIterator(resource_handle=iterator_resource)


# TensorFlow's own TPU names that a TPU program takes from its TPU module
# (tf.contrib.tpu on TF 1.x, tf.compat.v1.tpu after it) and that build
# without a TPU: on every line in tf.compat.v1.tpu ...
_V1_TPU_NAMES = ('CrossShardOptimizer', 'batch_parallel', 'bfloat16_scope',
                 'core', 'cross_replica_sum', 'initialize_system',
                 'outside_compilation', 'replicate', 'rewrite', 'shard',
                 'shutdown_system')
# ... on TF 2.x only.
_V1_TPU_NAMES_TF2 = ('PaddingSpec', 'XLAOptions')


def tpu_program_names():
  """{name: TensorFlow's object} for the TPU module names above, as this
  line has them, with tf.contrib.tpu's training loops (`repeat`,
  `while_loop`) and, where TensorFlow still has it (up to 2.15),
  `AsyncCheckpointSaverHook`. tf.contrib.tpu re-exports the same objects
  on TF 1.15; they are taken from where it takes them, so that naming
  them does not load tf.contrib."""
  names = {name: getattr(v1.tpu, name) for name in _V1_TPU_NAMES}
  names.update((name, getattr(v1.tpu, name)) for name in _V1_TPU_NAMES_TF2
               if hasattr(v1.tpu, name))
  names['repeat'] = training_loop.repeat
  names['while_loop'] = training_loop.while_loop
  try:
    from tensorflow.python.tpu import async_checkpoint  # pylint: disable=g-import-not-at-top
  except ImportError:  # TF >= 2.16
    pass
  else:
    names['AsyncCheckpointSaverHook'] = async_checkpoint.AsyncCheckpointSaverHook
  return names
