"""input_fn returning tensors rather than a tf.data.Dataset: `(features,
labels)` from an iterator's get_next() (or a queue's dequeue), or the
features alone, as Estimator and TPUEstimator accept them.

The tensors are built in the input graph, outside the device loop, where
the loop cannot read them itself: inside a while_loop a tensor from
outside has one value per session.run, not one per step. So an infeed
thread feeds them, whatever RunConfig.feeding says: one session.run of an
enqueue op per batch, `count` of them per loop of `count` steps, into the
infeed (a host FIFOQueue, or a TPU's hardware infeed), which the loop
dequeues as it dequeues a dataset's.

The end of input is the tensors' OutOfRangeError, and ends the run as a
dataset's end does: in training the queue is closed and the loop stops
after the batches already fed; in evaluation and prediction the thread
feeds batches past the end (padding.py) from then on. Any other error of
the tensors reaches the caller through the error rendezvous.

The input position cannot be saved with checkpoints (there is no iterator
state to save): training says so once per run.
"""
import tensorflow as tf

from hookestimator import device_feeds
from hookestimator import replicas as replicas_lib
from hookestimator.compat import DatasetBase, v1

NO_POSITION_WARNING = (
    "input_fn returned tensors, not a tf.data.Dataset: the input's position "
    'cannot be saved with checkpoints, so a run resumed from one reads the '
    'tensors from wherever their graph starts them (return a Dataset to '
    'resume the input where it stopped).')


def is_tensor_input(result):
  """Whether input_fn's `result` is tensors rather than a Dataset."""
  return not isinstance(result, DatasetBase)


def parse(result):
  """(features, labels) of input_fn's tensors, as Estimator reads them: a
  pair is (features, labels), anything else the features (labels None).
  Raises unless every part is a dense tf.Tensor of the graph being built.
  """
  features, labels = device_feeds.split_element(result)
  graph = v1.get_default_graph()
  for name, part in (('features', features), ('labels', labels)):
    for tensor in ([] if part is None else tf.nest.flatten(part)):
      if not isinstance(tensor, tf.Tensor):
        raise TypeError(
            'input_fn must return a tf.data.Dataset, or tensors (as from an '
            "iterator's get_next()): (features, labels) or the features "
            'alone, each a tf.Tensor or a dict of them; its %s hold %r' %
            (name, tensor))
      if tensor.graph is not graph:
        raise ValueError(
            'input_fn returned the tensor %s of another graph; build its '
            'tensors inside input_fn' % tensor.name)
  return features, labels


def element(results):
  """The one input element of input_fn's tensor `results`: the features,
  or (features, labels), of its one call; with one call per replica, their
  [replicas, ...] stack (each call's tensors must have the same
  structure)."""
  elements = []
  for result in results:
    if not is_tensor_input(result):
      raise TypeError('input_fn returned tensors once and %r once; it must '
                      'return the same kind of input at every call' %
                      (result,))
    features, labels = parse(result)
    elements.append(features if labels is None else (features, labels))
  if len(elements) == 1:
    return elements[0]
  for other in elements[1:]:
    tf.nest.assert_same_structure(elements[0], other)
  with tf.device(device_feeds.HOST_DEVICE):
    return replicas_lib.stack_elements(*elements)


def static_shapes_why(kind, replicas):
  """Why tensor input needs fully defined static shapes (None where it
  does not: one replica off a TPU takes batches of any shape)."""
  return device_feeds.static_shapes_why(kind, device_feeds.IN_LOOP, replicas)


def make_infeed(kind, element, plan, past_end=None):
  """The infeed of one input_fn batch's tensors, `element`, on device kind
  `kind` for a replicas.Plan's replicas; with `past_end`, the tensors fed
  once the input has ended (evaluation and prediction)."""
  count = plan.local_count
  units = 1
  if count > 1 and plan.layout == replicas_lib.PER_REPLICA:
    pass  # `element` stacks one input_fn call's batch per replica.
  elif count > 1 and plan.split_batches:
    replicas_lib.check_splittable(
        tf.nest.map_structure(lambda t: t.shape, element), count)
    element = replicas_lib.split_batch(element, count)
    if past_end is not None:
      past_end = replicas_lib.split_batch(past_end, count)
  elif count > 1:
    units = count  # Each replica its own batch: `count` batches a step.
  infeed_class = TpuTensorInfeed if kind == 'tpu' else TensorInfeed
  return infeed_class(element, past_end, units)


class TensorInfeed(device_feeds.HostInfeed):
  """The infeed queue, fed by running the input's tensors once per batch.

  Has HostInfeed's interface. `units` batches make one step's input (one
  per replica, stacked), each enqueued by a session.run of its own.
  """

  # Nothing to save: checkpoint.py skips the input position.
  saves_position = False

  def __init__(self, element, past_end=None, units=1):  # pylint: disable=super-init-not-called
    flat = tf.nest.flatten(element)
    self._structure = element
    self._types = [t.dtype for t in flat]
    self._shapes = [t.shape for t in flat]
    self._units = units
    with tf.device(device_feeds.HOST_DEVICE), v1.name_scope('infeed'):
      self._make_queue()
      self._enqueue_op = self._enqueue(flat)
      self._past_end_op = (None if past_end is None else
                           self._enqueue(tf.nest.flatten(past_end)))
      self.close_op = self._make_close_op()
      self.initializer = tf.no_op(name='tensor_input')
    self._session = None
    self._runs = None
    # Whether the tensors have ended (then only batches past the end).
    self._ended = False
    self.input_ended = False
    self.run_options = None

  def dequeue(self):
    """One step's batch as (features, labels), for use inside the loop:
    with several units, their [units, ...] stack."""
    if self._units == 1:
      return device_feeds.as_batch(self._dequeue_flat(), self._shapes,
                           self._structure)
    flat = self._queue.dequeue_many(self._units, name='infeed_dequeue')
    flat = list(flat) if isinstance(flat, (list, tuple)) else [flat]
    shapes = [tf.TensorShape([self._units]).concatenate(shape)
              for shape in self._shapes]
    return device_feeds.as_batch(flat, shapes, self._structure)

  def _callables(self, session):
    if session is not self._session:
      self._runs = [None if op is None else
                    session.make_callable(op, accept_options=True)
                    for op in (self._enqueue_op, self._past_end_op)]
      self._session = session
    return self._runs

  def run_loop(self, session, count):
    """Enqueues `count` steps' batches; returns False when the input has
    ended (and nothing is fed past its end)."""
    run_batch, run_past_end = self._callables(session)
    for _ in range(count * self._units):
      if not self._ended:
        try:
          run_batch(options=self.run_options)
          continue
        except tf.errors.OutOfRangeError:
          self._ended = True
      if run_past_end is None:
        self.input_ended = True
        self._input_ended(session, count)
        return False
      run_past_end(options=self.run_options)
    return True

  def release_session(self):
    self._session = self._runs = None


class TpuTensorInfeed(TensorInfeed, device_feeds.TpuInfeed):
  """TensorInfeed into the TPU's hardware infeed (one unit a step)."""
