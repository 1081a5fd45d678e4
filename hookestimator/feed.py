"""Infeed and outfeed queues on the host, and the host-side enqueue loop.

On CPU and GPU both feeds are FIFOQueues placed on the host CPU. The
infeed's `enqueue_loop` moves `count` batches from the dataset iterator into
the queue in ONE session.run (a host-side while_loop); the device loop
dequeues one batch per step. The outfeed carries each step's values back,
and `dequeue_up_to(count)` takes a whole loop's worth in one session.run.
"""
import logging

import tensorflow as tf

from hookestimator.compat import DatasetBase, v1

log = logging.getLogger(__name__)

HOST_DEVICE = '/device:CPU:0'
# Batches buffered ahead of the device loop. The infeed thread fills the
# queue while the device computes, so a few batches are enough to overlap.
INFEED_CAPACITY = 8
# Steps of outfed values buffered ahead of the outfeed thread.
OUTFEED_CAPACITY = 256


def dataset_structure(dataset, batch_size):
  """Checks `dataset` yields (features, labels) batches of `batch_size`.

  Returns the element's (types, shapes) structures.
  """
  if not isinstance(dataset, DatasetBase):
    raise TypeError('input_fn must return a tf.data.Dataset, got %r' %
                    (dataset,))
  types = v1.data.get_output_types(dataset)
  shapes = v1.data.get_output_shapes(dataset)
  if not isinstance(shapes, tuple) or len(shapes) != 2:
    raise ValueError('input_fn must return a dataset of (features, labels) '
                     'pairs, got elements of structure %r' % (types,))
  paths = _flat_paths(shapes)
  for path, shape in zip(paths, tf.nest.flatten(shapes)):
    if shape.ndims is None or shape.ndims < 1 or shape[0] != batch_size:
      raise ValueError(
          'input_fn dataset component %s has shape %s; expected a static '
          'batch dimension equal to params["batch_size"] = %d (batch with '
          'drop_remainder=True)' % (path, shape, batch_size))
    if not shape.is_fully_defined():
      raise ValueError(
          'input_fn dataset component %s has shape %s; the feeding queues '
          'need fully defined static shapes (pad to a fixed size)' %
          (path, shape))
  return types, shapes


def _flat_paths(structure, prefix=('features', 'labels')):
  """Human-readable names of the flattened components of (features, labels)."""
  names = []
  for root, part in zip(prefix, structure):
    if isinstance(part, dict):
      flat_keys = sorted(part)
      names.extend('%s[%r]' % (root, key) for key in flat_keys
                   for _ in tf.nest.flatten(part[key]))
    else:
      count = len(tf.nest.flatten(part))
      names.extend([root] if count == 1 else
                   ['%s[%d]' % (root, i) for i in range(count)])
  return names


class HostInfeed(object):
  """The dataset iterator, the infeed queue and the enqueue loop."""

  def __init__(self, dataset, batch_size):
    types, shapes = dataset_structure(dataset, batch_size)
    self._structure = shapes
    self._shapes = tf.nest.flatten(shapes)
    with tf.device(HOST_DEVICE), v1.name_scope('infeed'):
      self._iterator = v1.data.make_initializable_iterator(dataset)
      self._queue = v1.FIFOQueue(
          INFEED_CAPACITY, tf.nest.flatten(types), shapes=self._shapes,
          name='infeed_queue')
      self.count = v1.placeholder(tf.int32, [], name='count')

      def enqueue_one(i):
        # The control dependencies keep batch i+1 from being read before
        # batch i is enqueued, so the end of input loses no batch.
        with tf.control_dependencies([i]):
          batch = self._iterator.get_next()
        with tf.control_dependencies([self._queue.enqueue(
            tf.nest.flatten(batch))]):
          return i + 1

      self.enqueue_loop = v1.while_loop(
          lambda i: i < self.count, enqueue_one, [tf.constant(0)],
          parallel_iterations=1, back_prop=False, name='enqueue_loop')
      self.close_op = self._queue.close(cancel_pending_enqueues=True)
    self.initializer = self._iterator.initializer

  def dequeue(self):
    """One batch as (features, labels), for use inside the device loop."""
    flat = self._queue.dequeue(name='infeed_dequeue')
    if not isinstance(flat, (list, tuple)):
      flat = [flat]
    for tensor, shape in zip(flat, self._shapes):
      tensor.set_shape(shape)
    return tf.nest.pack_sequence_as(self._structure, list(flat))

  def run_loop(self, session, count):
    """Enqueues `count` batches; returns False when the input has ended.

    At the end of input the queue is closed, so the device loop consumes
    the batches already enqueued and then stops.
    """
    try:
      session.run(self.enqueue_loop, {self.count: count})
      return True
    except tf.errors.OutOfRangeError:
      log.info('Input ended; closing the infeed queue.')
      session.run(self.close_op)
      return False


class HostOutfeed(object):
  """Per-step values from the device loop back to the host, in step order."""

  def __init__(self):
    self._queue = None
    self.count = None

  def enqueue(self, values):
    """Enqueues one step's `values`; called inside the device loop."""
    values = list(values)
    if self._queue is None:
      # The queue is created outside the loop being built.
      with v1.init_scope(), tf.device(HOST_DEVICE):
        self._queue = v1.FIFOQueue(
            OUTFEED_CAPACITY, [v.dtype for v in values],
            shapes=[v.shape for v in values], name='outfeed_queue')
    return self._queue.enqueue(values, name='outfeed_enqueue')

  def build_host_ops(self):
    """Builds the host-side dequeue and close ops; call after the loop."""
    if self._queue is None:
      raise RuntimeError('the device loop enqueued nothing to the outfeed')
    with tf.device(HOST_DEVICE), v1.name_scope('outfeed'):
      self.count = v1.placeholder(tf.int32, [], name='count')
      self.dequeue_op = self._queue.dequeue_up_to(self.count,
                                                  name='outfeed_dequeue')
      if not isinstance(self.dequeue_op, (list, tuple)):
        self.dequeue_op = [self.dequeue_op]
      # Closing without cancelling lets the host drain what the device put
      # in before the close; cancelling also unblocks a full queue.
      self.close_op = self._queue.close(cancel_pending_enqueues=False)
      self.cancel_op = self._queue.close(cancel_pending_enqueues=True)
