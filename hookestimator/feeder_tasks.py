"""Remote input workers: the `feeder` tasks of a cluster fill the trainer's
infeed queue over TensorFlow's gRPC runtime (the Feeder pattern).

input_fn is called once per feeder with `params['input_context']` naming
the feeder's shard, and its pipeline is placed on that feeder's CPU: the
feeder's process reads, decodes and batches, and sends whole batches to
the one infeed queue on the trainer's CPU. The trainer's infeed thread
keeps its roles. For a loop of `count` steps it shares the count out
among the feeders whose input has not ended, in ONE session.run in which
every feeder's enqueue loop runs at once; each loop enqueues up to its
share and stops early, without an error, when its shard ends. A shortfall
is shared out again among the others, so a loop gets exactly `count`
batches while any feeder has input, and the checkpoint taken after it
holds each feeder's position after exactly the batches consumed. Once
every feeder's shard has ended the queue is closed: the device loop runs
the batches already in it and stops, as at a local end of input.
"""
import logging

import tensorflow as tf

from hookestimator import config as config_lib
from hookestimator import device_feeds
from hookestimator import graph_structure
from hookestimator import input_position
from hookestimator import task_server
from hookestimator.compat import v1

log = logging.getLogger(__name__)

# Ops that call back into the Python of the process that built the graph:
# they cannot run in a feeder's process.
PYTHON_OPS = ('PyFunc', 'PyFuncStateless', 'EagerPyFunc')
# A feeder sends the trainer up to this many batches in one transfer, and
# up to about this many bytes (bench.feeders: 32 batches a transfer cost
# the trainer 0.14 ms of CPU a step, 8 batches 0.21, 1 batch 0.71).
CHUNK_BATCHES = 32
CHUNK_BYTES = 4 << 20


class _Pipeline(object):
  """One feeder's iterator and its enqueue loop into the trainer's queue:
  enqueues up to `count` batches and returns how many it did, fewer once
  the shard has ended.

  The batches cross to the trainer `chunk` at a time, stacked, in one
  enqueue_many: each crossing is a distributed loop iteration with its own
  round trip and control messages, which per batch cost the trainer more
  CPU than a batch of a typical pipeline does. A prefetch buffer on the
  feeder makes the next chunk while one crosses.
  """

  def __init__(self, dataset, device, enqueue_many, types, shapes, index,
               chunk):
    with tf.device(device), v1.name_scope('feeder_%d' % index):
      iterator = v1.data.make_initializable_iterator(dataset.prefetch(chunk))
      self.initializer = iterator.initializer
      self.count = v1.placeholder(tf.int32, [], name='count')
      handle = iterator.initializer.inputs[1]

      def read_chunk(size):
        """(batches read, whether the shard has more, their stacks)."""
        def read_one(read, more, arrays):
          del more
          # Each read waits for the one before, keeping the shard's order.
          with tf.control_dependencies([read]):
            optional = tf.raw_ops.IteratorGetNextAsOptional(
                iterator=handle, output_types=types, output_shapes=shapes)
            has_value = tf.raw_ops.OptionalHasValue(optional=optional)

          def keep():
            flat = tf.raw_ops.OptionalGetValue(
                optional=optional, output_types=types, output_shapes=shapes)
            return read + 1, [a.write(read, v) for a, v in zip(arrays, flat)]
          read, arrays = tf.cond(has_value, keep, lambda: (read, arrays))
          return read, has_value, arrays

        arrays = [tf.TensorArray(dtype, size=0, dynamic_size=True,
                                 element_shape=shape)
                  for dtype, shape in zip(types, shapes)]
        read, more, arrays = v1.while_loop(
            lambda read, more, _: tf.logical_and(more, read < size),
            read_one, [tf.constant(0), tf.constant(True), arrays],
            parallel_iterations=1, back_prop=False, name='read_chunk')
        return read, more, [a.stack() for a in arrays]

      def send_chunk(fed, more):
        del more
        read, more, stacks = read_chunk(
            tf.minimum(chunk, self.count - fed))
        with tf.control_dependencies([enqueue_many(stacks)]):
          return fed + read, more

      self.fed, _ = v1.while_loop(
          lambda fed, more: tf.logical_and(more, fed < self.count),
          send_chunk, [tf.constant(0), tf.constant(True)],
          parallel_iterations=1, back_prop=False, name='enqueue_loop')


class FeederInfeeds(object):
  """The feeders' pipelines and the trainer's infeed queue as one infeed:
  the interface the feeding hook, the device loop and the checkpoint hook
  use (fed by the infeed thread).

  Args:
    datasets: each feeder's dataset, of the same element structure.
    devices: each feeder's CPU.
    trainer_device: the trainer's CPU: the queue, and where the
      checkpoint reads the input positions (feeders write nothing).
  """

  feeds_from_thread = True
  # Checkpoint keys of the input positions: feeder_0_..., feeder_1_...
  part_label = 'feeder'

  def __init__(self, datasets, devices, trainer_device):
    types, shapes = _common_structure(datasets)
    self._structure = shapes
    self._types = tf.nest.flatten(types)
    self._shapes = tf.nest.flatten(shapes)
    self.save_device = trainer_device
    with tf.device(trainer_device), v1.name_scope('infeed'):
      self._queue = v1.FIFOQueue(device_feeds.INFEED_CAPACITY, self._types,
                                 shapes=self._shapes, name='infeed_queue')
      self.close_op = self._queue.close(cancel_pending_enqueues=True)
    chunk = chunk_batches(self._types, self._shapes)
    self.parts = [
        _Pipeline(dataset, device, self._queue.enqueue_many, self._types,
                  self._shapes, index, chunk)
        for index, (dataset, device) in enumerate(zip(datasets, devices))]
    with tf.device(trainer_device):
      self.initializer = tf.group(*[p.initializer for p in self.parts],
                                  name='feeder_infeeds_init')
    _warn_if_unsharded(datasets)
    self._ended = [False] * len(self.parts)
    self._next = 0  # The feeder whose share comes first in the next loop.
    self.input_ended = False
    self.run_options = None

  def dequeue(self):
    """One batch as (features, labels), for use inside the device loop."""
    flat = self._queue.dequeue(name='infeed_dequeue')
    flat = list(flat) if isinstance(flat, (list, tuple)) else [flat]
    return device_feeds.as_batch(flat, self._shapes, self._structure)

  def shares(self, count):
    """{feeder index: batches} for `count` more batches, shared out evenly
    among the feeders whose shard has not ended, the remainder going to
    each in turn across calls."""
    active = [i for i in range(len(self.parts)) if not self._ended[i]]
    if not active:
      return {}
    first = [i for i in active if i >= self._next] + [
        i for i in active if i < self._next]
    base, extra = divmod(count, len(first))
    shares = {}
    for position, index in enumerate(first):
      share = base + (1 if position < extra else 0)
      if share:
        shares[index] = share
    if extra:
      self._next = (first[extra - 1] + 1) % len(self.parts)
    return shares

  def run_loop(self, session, count):
    """Enqueues `count` batches from the feeders; False once every shard
    has ended (the queue is closed then, so the loop stops after what was
    fed)."""
    left = count
    while left > 0:
      shares = self.shares(left)
      if not shares:
        self.input_ended = True
        log.info('Every feeder\'s input ended; closing the infeed queue.')
        session.run(self.close_op)
        return False
      indices = sorted(shares)
      fed = session.run([self.parts[i].fed for i in indices],
                        {self.parts[i].count: shares[i] for i in indices},
                        options=self.run_options)
      for index, done in zip(indices, fed):
        if done < shares[index]:
          log.info('Feeder %d: its input ended.', index)
          self._ended[index] = True
        left -= int(done)
    return True

  def release_session(self):
    pass


def chunk_batches(types, shapes):
  """Batches a feeder sends in one transfer: CHUNK_BATCHES, fewer for
  batches so large that CHUNK_BYTES holds fewer (one for strings, whose
  size is unknown)."""
  if any(dtype == tf.string for dtype in types):
    return 1
  size = sum(dtype.size * shape.num_elements()
             for dtype, shape in zip(types, shapes))
  return max(1, min(CHUNK_BATCHES, CHUNK_BYTES // max(size, 1)))


def _common_structure(datasets):
  structures = [device_feeds.dataset_structure(d) for d in datasets]
  check_runs_remotely(datasets)
  for index, structure in enumerate(structures[1:], 1):
    if structure != structures[0]:
      raise ValueError(
          "input_fn gave feeder %d a dataset of elements %r, and feeder 0 "
          "one of %r; every feeder's dataset must have the same types and "
          'shapes' % (index, structure, structures[0]))
  return structures[0]


def _warn_if_unsharded(datasets):
  """Warns when every feeder's pipeline is the same graph: input_fn then
  ignored params['input_context'], and each example is read once per
  feeder an epoch."""
  if len(datasets) < 2:
    return
  graph = datasets[0]._variant_tensor.graph  # pylint: disable=protected-access
  digests = {input_position.fingerprint(graph, d._variant_tensor,  # pylint: disable=protected-access
                                        named=False) for d in datasets}
  if len(digests) == 1:
    log.warning(
        "Every feeder's input pipeline is the same: input_fn does not "
        "shard by params['input_context'], so each of the %d feeders reads "
        'every example, and each is trained on %d times an epoch. Shard '
        'with dataset.shard(context.num_input_pipelines, '
        'context.input_pipeline_id) (hookestimator.models.shard).',
        len(datasets), len(datasets))


def check_runs_remotely(datasets):
  """Raises ValueError if the pipelines of `datasets` (of one graph) call
  Python (tf.py_function, tf.numpy_function, Dataset.from_generator): a
  feeder runs the pipeline's ops, not the trainer's Python."""
  graph_def = graph_structure.graph_def(datasets[0]._variant_tensor.graph)  # pylint: disable=protected-access
  nodes = list(graph_def.node) + [
      node for function in graph_def.library.function
      for node in function.node_def]
  found = sorted({node.op for node in nodes if node.op in PYTHON_OPS})
  if found:
    raise ValueError(
        "input_fn's dataset calls Python (%s ops: tf.py_function, "
        'tf.numpy_function or Dataset.from_generator), which cannot run on '
        'a feeder: a feeder runs the pipeline\'s TensorFlow ops in its own '
        'process. Express the pipeline in TensorFlow ops, or feed from the '
        "trainer (a cluster without a 'feeder' job)" % ', '.join(found))


def feed_forever(config=None):
  """Serves this process's task of a cluster with feeders (a feeder, as
  RunConfig's cluster or TF_CONFIG names it) until the chief's run ends,
  then ends the process: status 0 when the run succeeded. Never returns.

  The chief places this feeder's input pipeline here, so nothing of the
  experiment is needed: only the cluster.
  """
  config = config_lib.RunConfig() if config is None else config
  cluster = config.cluster
  if cluster is None or cluster.task_type != 'feeder':
    raise ValueError(
        'feeding needs a cluster task of the "feeder" job (TF_CONFIG or '
        'RunConfig(cluster=...)); this process is %s' % (
            'not in a cluster' if cluster is None else
            'task %s' % cluster.describe(cluster.task)))
  task_server.serve(cluster, task_server.server(cluster, config.session_config),
              config.peer_timeout_secs)
