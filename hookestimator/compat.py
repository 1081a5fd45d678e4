"""The few differences between TensorFlow 1.15 and 2.x, in one place.

Everything else in the package is written against `tf.compat.v1` and runs
unchanged on both lines.
"""
import tensorflow as tf
from tensorflow.python.ops import summary_ops_v2

v1 = tf.compat.v1

TF_VERSION = tuple(int(part) for part in tf.__version__.split('.')[:2])
IS_TF2 = TF_VERSION >= (2, 0)

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
