"""The infeed and outfeed per device kind and feeding path.

Two ways to feed the device loop:
- 'in_loop' (the default on CPU and GPU): the loop reads the dataset's
  iterator itself, one batch per step, from a prefetch buffer that
  tf.data fills in its own threads while the device computes. No feeding
  thread and no queue: the fastest path (bench.peers).
- 'infeed_thread' (always on TPU; on CPU and GPU when asked): an infeed
  controller thread moves `count` batches from the iterator into the
  infeed in ONE session.run (a host-side while_loop) per loop, and the
  loop dequeues one batch per step. On CPU and GPU the infeed is a
  FIFOQueue placed on the host CPU; on TPU it is the hardware infeed.

Either way the outfeed carries each step's values back (a host FIFOQueue,
or the TPU's hardware outfeed), and `dequeue_up_to(count)` takes many
steps' worth in one session.run.
"""
import logging

import tensorflow as tf

from hookestimator.compat import DatasetBase, v1
from hookestimator.config import FEEDING_PATHS

log = logging.getLogger(__name__)

HOST_DEVICE = '/device:CPU:0'
# The feeding paths (RunConfig.feeding).
IN_LOOP, INFEED_THREAD = FEEDING_PATHS
# Batches buffered ahead of the device loop. The infeed thread fills the
# queue while the device computes, so a few batches are enough to overlap.
INFEED_CAPACITY = 8
# Steps of outfed values buffered ahead of the outfeed thread.
OUTFEED_CAPACITY = 256
# Training reads the outfeed once this many steps are waiting: half the
# queue, so the device can always enqueue while the host has not yet read.
OUTFEED_BATCH_STEPS = OUTFEED_CAPACITY // 2
# Threads of the inter-op pool the feeding threads' session.runs use.
FEEDING_POOL_THREADS = 2
# Threads of the training loop's inter-op pool when the session config sets
# none: the loop runs one step at a time (parallel_iterations=1), each
# large op spreads over the intra-op threads, and one inter-op thread
# avoids handing every small op between threads (measured by bench.peers:
# faster for both the mlp and gpt2-tiny on two cores, and no more
# half-speed sessions).
LOOP_POOL_THREADS = 1
# The names of the shared pools start with this (then the role and size).
SHARED_POOL_PREFIX = 'hookestimator_'


def session_pools(session_config):
  """(config, loop_options, feeding_options): a copy of `session_config`
  (None: soft placement) with two more inter-op thread pools, shared by
  every session of the process, and the RunOptions that run on each.

  The training loop runs on one, the feeding threads on the other, so
  that their ops never wait in line behind each other's or behind other
  runs (a checkpoint write, a hook's fetch), which keep the first pool.
  """
  config = v1.ConfigProto(allow_soft_placement=True)
  if session_config is not None:
    config.CopyFrom(session_config)
  pools = config.session_inter_op_thread_pool
  if not pools:
    # The first pool serves every run that names none, as the session's
    # single pool did.
    _add_shared_pool(pools, 'default', config.inter_op_parallelism_threads)
  _add_shared_pool(pools, 'loop', config.inter_op_parallelism_threads or
                   LOOP_POOL_THREADS)
  _add_shared_pool(pools, 'feeding', FEEDING_POOL_THREADS)
  return (config, v1.RunOptions(inter_op_thread_pool=len(pools) - 2),
          v1.RunOptions(inter_op_thread_pool=len(pools) - 1))


def _add_shared_pool(pools, role, num_threads):
  """Adds a pool that every session of this process shares (TensorFlow
  makes it at the first session that names it and keeps it), so that a
  run starts no threads of its own for it: a pool per session would start
  and end its threads with every train() call, and each new thread grows
  the process's memory (a malloc arena of its own)."""
  pools.add(num_threads=num_threads,
            global_name='%s%s_%d' % (SHARED_POOL_PREFIX, role, num_threads))


class CountedRun(object):
  """session.run of fixed `fetches` with a loop count fed, through a
  callable made once per session: much less Python per call than run(),
  so a feeding thread holds the GIL only briefly."""

  def __init__(self, count):
    self._count = count
    self._key = None
    self._callable = None

  def __call__(self, session, fetches, count, options=None):
    key = (session, id(fetches))
    if key != self._key:
      self._callable = session.make_callable(fetches, [self._count],
                                             accept_options=True)
      self._key = key
    return self._callable(count, options=options)

  def release(self):
    """Forgets the session's callable, which holds the session."""
    self._key = self._callable = None


def split_element(element):
  """(features, labels) of an input element (or of its structure of shapes
  or types), as Estimator reads input_fn's result: a pair is (features,
  labels); a dict or a single tensor is the features alone, labels None.
  Other tuples are refused, as Estimator refuses them."""
  if isinstance(element, (tuple, list)):
    if len(element) != 2:
      raise ValueError(
          'input_fn should return (features, labels) as a len 2 tuple, or '
          'the features alone (a tensor or a dict of tensors); its elements '
          'are a %s of %d: %r' % (type(element).__name__, len(element),
                                  element))
    return element[0], element[1]
  return element, None


def dataset_structure(dataset):
  """Checks `dataset` yields (features, labels) pairs, or features alone
  (BERT's input_fn: a dict of features, the labels among them). A batch
  may have any layout (a TPU program's input is often transposed and
  flattened): as with TPUEstimator, no component needs a leading batch
  axis.

  Returns the element's (types, shapes) structures.
  """
  if not isinstance(dataset, DatasetBase):
    raise TypeError('input_fn must return a tf.data.Dataset, or tensors '
                    "(as from an iterator's get_next()), got %r" % (dataset,))
  types = v1.data.get_output_types(dataset)
  shapes = v1.data.get_output_shapes(dataset)
  split_element(types)
  return types, shapes


# Why a feeding path needs fully defined static shapes (static_shapes_why).
QUEUE_NEEDS_STATIC = 'the feeding queues need fully defined static shapes'
TPU_NEEDS_STATIC = "a TPU's hardware infeed needs fully defined static shapes"
REPLICAS_NEED_STATIC = ("%d replicas take equal shares of each step's input, "
                        'which needs fully defined static shapes')


def static_shapes_why(kind, feeding, replicas):
  """Why training input on device kind `kind`, fed by `feeding` to
  `replicas` replicas, needs fully defined static shapes; None where it
  does not: off a TPU, one replica reading its input inside its own loop
  takes batches of any shape, as Estimator does."""
  if kind == 'tpu':
    return TPU_NEEDS_STATIC
  if replicas > 1:
    return REPLICAS_NEED_STATIC % replicas
  if feeding != IN_LOOP:
    return QUEUE_NEEDS_STATIC
  return None


def check_static_shapes(shapes, why):
  """Raises unless every component of the element structure `shapes` is
  fully defined; `why` (static_shapes_why's) says what needs it, None
  that nothing does."""
  if why is None:
    return
  features, labels = split_element(shapes)
  parts = [('features', features)] + (
      [] if labels is None else [('labels', labels)])
  for root, part in parts:
    for path, shape in zip(_flat_paths(root, part), tf.nest.flatten(part)):
      if not shape.is_fully_defined():
        raise ValueError(
            "input_fn's %s has shape %s; the %s to the model must have "
            'static shape here: %s (batch with '
            'drop_remainder=True, pad to a fixed size)' % (path, shape, root,
                                                          why))


def _flat_paths(root, part):
  """Human-readable names of the flattened components of `part`, the
  features or labels named `root`."""
  if isinstance(part, dict):
    return ['%s[%r]' % (root, key) for key in sorted(part)
            for _ in tf.nest.flatten(part[key])]
  count = len(tf.nest.flatten(part))
  return [root] if count == 1 else ['%s[%d]' % (root, i) for i in range(count)]


def as_batch(flat, shapes, structure):
  """The (features, labels) of a batch read as `flat` tensors, each given
  its static shape; labels None where the input has none."""
  for tensor, shape in zip(flat, shapes):
    tensor.set_shape(shape)
  return split_element(tf.nest.pack_sequence_as(structure, flat))


class InLoopInfeed(object):
  """The dataset iterator, read inside the device loop, one batch per step.

  A prefetch buffer of INFEED_CAPACITY batches, filled by tf.data's own
  threads, overlaps the input with the loop's compute as the infeed
  thread does. The checkpointed input position is the iterator's state,
  its buffer included, so it stays exact. At the end of input the loop's
  read fails with OutOfRangeError after the steps before it have run, as
  a closed infeed queue's dequeue does. With no queue between them, the
  batches may have any shapes (static_shapes_why).
  """

  # No feeding thread: the InfeedOutfeedHook starts no infeed controller.
  feeds_from_thread = False

  def __init__(self, dataset):
    types, shapes = dataset_structure(dataset)
    self._structure = shapes
    self._shapes = tf.nest.flatten(shapes)
    with tf.device(HOST_DEVICE), v1.name_scope('infeed'):
      self._iterator = v1.data.make_initializable_iterator(
          dataset.prefetch(INFEED_CAPACITY))
    self.initializer = self._iterator.initializer
    # No queue to close: nothing waits on the input but the loop itself.
    self.close_op = None
    # Set by the feeding hook when a loop ended at the end of input.
    self.input_ended = False
    self.run_options = None

  def dequeue(self):
    """One batch as (features, labels), for use inside the device loop."""
    with tf.device(HOST_DEVICE):
      flat = tf.nest.flatten(self._iterator.get_next())
    return as_batch(flat, self._shapes, self._structure)

  def release_session(self):
    pass


class HostInfeed(object):
  """The dataset iterator, the infeed queue and the enqueue loop."""

  feeds_from_thread = True
  # What needs the static shapes the queue is made with.
  static_shapes_why = QUEUE_NEEDS_STATIC

  def __init__(self, dataset):
    types, shapes = dataset_structure(dataset)
    check_static_shapes(shapes, self.static_shapes_why)
    self._structure = shapes
    self._types = tf.nest.flatten(types)
    self._shapes = tf.nest.flatten(shapes)
    with tf.device(HOST_DEVICE), v1.name_scope('infeed'):
      self._iterator = v1.data.make_initializable_iterator(dataset)
      self._make_queue()
      self.count = v1.placeholder(tf.int32, [], name='count')
      self._run = CountedRun(self.count)

      def enqueue_one(i):
        # The control dependencies keep batch i+1 from being read before
        # batch i is enqueued, so the end of input loses no batch.
        with tf.control_dependencies([i]):
          batch = self._iterator.get_next()
        with tf.control_dependencies([self._enqueue(tf.nest.flatten(batch))]):
          return i + 1

      self.enqueue_loop = v1.while_loop(
          lambda i: i < self.count, enqueue_one, [tf.constant(0)],
          parallel_iterations=1, back_prop=False, name='enqueue_loop')
      self.close_op = self._make_close_op()
    self.initializer = self._iterator.initializer
    # Set once the dataset has run out (read after the infeed thread ended).
    self.input_ended = False
    # The RunOptions of the enqueue runs (session_pools').
    self.run_options = None

  def _make_queue(self):
    # A queue of batches of any shape where the shapes are not all static
    # (tensor_input.py: one replica off a TPU takes them as they come).
    static = all(shape.is_fully_defined() for shape in self._shapes)
    self._queue = v1.FIFOQueue(INFEED_CAPACITY, self._types,
                               shapes=self._shapes if static else None,
                               name='infeed_queue')

  def _enqueue(self, flat):
    return self._queue.enqueue(flat)

  def _dequeue_flat(self):
    flat = self._queue.dequeue(name='infeed_dequeue')
    return list(flat) if isinstance(flat, (list, tuple)) else [flat]

  def _make_close_op(self):
    return self._queue.close(cancel_pending_enqueues=True)

  def dequeue(self):
    """One batch as (features, labels), for use inside the device loop."""
    return as_batch(self._dequeue_flat(), self._shapes, self._structure)

  def run_loop(self, session, count):
    """Enqueues `count` batches; returns False when the input has ended.

    At the end of input the queue is closed, so the device loop consumes
    the batches already enqueued and then stops.
    """
    try:
      self._run(session, self.enqueue_loop, count, self.run_options)
      return True
    except tf.errors.OutOfRangeError:
      self.input_ended = True
      self._input_ended(session, count)
      return False

  def release_session(self):
    """Drops what holds the last session, once no thread uses it."""
    self._run.release()

  def _input_ended(self, session, count):
    del count  # The loop is cut short wherever the input ended.
    log.info('Input ended; closing the infeed queue.')
    session.run(self.close_op)


class HostOutfeed(object):
  """Per-step values from the device loop back to the host, in step order."""

  def __init__(self):
    self._queue = None
    self._types = None
    self._shapes = None
    self.count = None
    self._run = None
    # The RunOptions of the dequeue runs (session_pools').
    self.run_options = None

  def enqueue(self, values):
    """Enqueues one step's `values`; called inside the device loop."""
    values = list(values)
    if self._types is None:
      self._types = [v.dtype for v in values]
      self._shapes = [v.shape for v in values]
      # The queue is created outside the loop being built.
      with v1.init_scope(), tf.device(HOST_DEVICE):
        self._make_queue()
    return self._enqueue(values)

  def _make_queue(self):
    self._queue = v1.FIFOQueue(OUTFEED_CAPACITY, self._types,
                               shapes=self._shapes, name='outfeed_queue')

  def _enqueue(self, values):
    return self._queue.enqueue(values, name='outfeed_enqueue')

  def build_host_ops(self):
    """Builds the host-side dequeue and close ops; call after the loop."""
    if self._types is None:
      raise RuntimeError('the device loop enqueued nothing to the outfeed')
    with tf.device(HOST_DEVICE), v1.name_scope('outfeed'):
      self.count = v1.placeholder(tf.int32, [], name='count')
      self._run = CountedRun(self.count)
      self.dequeue_op = self._dequeue_up_to(self.count)
      self._make_close_ops()

  def run_dequeue(self, session, fetches, count):
    """Runs `fetches` (built on dequeue_op) for up to `count` steps; None
    when the queue was closed with no step left in it."""
    try:
      return self._run(session, fetches, count, self.run_options)
    except tf.errors.OutOfRangeError:
      return None

  def release_session(self):
    """Drops what holds the last session, once no thread uses it."""
    if self._run is not None:
      self._run.release()

  def _dequeue_up_to(self, count):
    values = self._queue.dequeue_up_to(count, name='outfeed_dequeue')
    return list(values) if isinstance(values, (list, tuple)) else [values]

  def _make_close_ops(self):
    # Closing without cancelling lets the host drain what the device put
    # in before the close; cancelling also unblocks a full queue.
    self.close_op = self._queue.close(cancel_pending_enqueues=False)
    self.cancel_op = self._queue.close(cancel_pending_enqueues=True)


class TpuInfeed(HostInfeed):
  """The TPU's hardware infeed: the host enqueues, the TPU program dequeues.

  A hardware queue cannot be closed: when the input ends, or a thread
  fails, the device can only be unblocked by closing the session.
  """

  static_shapes_why = TPU_NEEDS_STATIC

  def _make_queue(self):
    self._queue = None

  def _enqueue(self, flat):
    return tf.raw_ops.InfeedEnqueueTuple(inputs=flat, shapes=self._shapes,
                                         device_ordinal=0)

  def _dequeue_flat(self):
    return list(tf.raw_ops.InfeedDequeueTuple(dtypes=self._types,
                                              shapes=self._shapes))

  def _make_close_op(self):
    return None

  def _input_ended(self, session, count):
    raise InputEndedError(
        'The input ended inside a loop of %d steps. A TPU program waits on '
        'its hardware infeed until it is fed, so on TPU the dataset must '
        'outlast training: repeat it, or train for fewer steps.' % count)


class InputEndedError(RuntimeError):
  """The input ended where the device cannot stop early."""


class TpuOutfeed(HostOutfeed):
  """The TPU's hardware outfeed, dequeued on the host step by step inside
  one host-side while_loop per loop."""

  def _make_queue(self):
    self._queue = None

  def _enqueue(self, values):
    return tf.raw_ops.OutfeedEnqueueTuple(inputs=values)

  def _dequeue_up_to(self, count):
    def dequeue_one(i, arrays):
      with tf.control_dependencies([i]):
        values = tf.raw_ops.OutfeedDequeueTuple(
            dtypes=self._types, shapes=self._shapes, device_ordinal=0)
      return i + 1, [a.write(i, v) for a, v in zip(arrays, values)]

    arrays = [tf.TensorArray(dtype, size=count, element_shape=shape)
              for dtype, shape in zip(self._types, self._shapes)]
    _, arrays = v1.while_loop(lambda i, _: i < count, dequeue_one,
                              [tf.constant(0), arrays],
                              parallel_iterations=1, back_prop=False)
    return [a.stack() for a in arrays]

  def _make_close_ops(self):
    self.close_op = None
    self.cancel_op = None


def make_outfeed(kind):
  """The outfeed of device kind 'cpu', 'gpu' or 'tpu'."""
  return TpuOutfeed() if kind == 'tpu' else HostOutfeed()


def make_feeds(kind, dataset, feeding=IN_LOOP):
  """The (infeed, outfeed) pair for device kind 'cpu', 'gpu' or 'tpu' and
  feeding path `feeding` (the TPU has only its infeed thread)."""
  if kind == 'tpu':
    return TpuInfeed(dataset), make_outfeed(kind)
  if feeding == IN_LOOP:
    return InLoopInfeed(dataset), make_outfeed(kind)
  if feeding == INFEED_THREAD:
    return HostInfeed(dataset), make_outfeed(kind)
  raise ValueError('feeding must be one of %r, got %r' % (FEEDING_PATHS,
                                                          feeding))


def end_ops(infeed, outfeed):
  """(drain_ops, cancel_ops) of a pair of feeds, for InfeedOutfeedHook:
  the ops that close the queues at the end, letting the host drain them,
  and those that also unblock every pending queue op on an error.
  cancel_ops is None for the TPU's hardware feeds, which no op can
  close (an error closes the session instead)."""
  if outfeed.cancel_op is None:
    return (), None
  drain = [op for op in (infeed.close_op, outfeed.close_op) if op is not None]
  cancel = [op for op in (infeed.close_op, outfeed.cancel_op)
            if op is not None]
  return drain, cancel
