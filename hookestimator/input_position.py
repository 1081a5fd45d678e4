"""The input's position: the infeed iterator's state, saved in checkpoints.

A checkpoint taken at a loop boundary holds the iterator's state after
exactly the batches its steps consumed (the infeed reads a loop's batches
only when that loop is signalled), so a run resumed from it continues the
data stream where the checkpoint was taken: every example is read once per
epoch however often the run is killed and resumed.

The state is stored in the checkpoint under a key naming a fingerprint of
the input pipeline (the graph that makes the dataset, its data included;
a constant over graph_structure.LARGE_CONSTANT_BYTES, such as an in-memory
array given to `from_tensor_slices`, counts by its dtype and shape only,
so hashing the pipeline does not read the whole array).
TensorFlow rebuilds the saved pipeline when it restores an iterator, so a
state is restored only into the same pipeline; a different input_fn starts
from its beginning. A pipeline whose state cannot be serialized (one that
draws random numbers in a map, say) is not saved, and says so once.
"""
import contextlib
import hashlib
import logging

import tensorflow as tf
from tensorflow.python.training.saving import saveable_object

from hookestimator import compat
from hookestimator import graph_structure
from hookestimator.compat import v1

log = logging.getLogger(__name__)

KEY_PREFIX = 'hookestimator/input_position/'


def is_input_position_key(name):
  """Whether a checkpoint key holds an input position, not a variable."""
  return name.startswith(KEY_PREFIX)


def fingerprint(graph, dataset, named=True):
  """A digest of the graph that makes the `dataset` variant tensor; unless
  `named`, of its ops and data only, not their names and devices (two
  pipelines built alike in one graph have the same).

  Constants over graph_structure.LARGE_CONSTANT_BYTES count by their
  dtype and shape, not their values: two pipelines that differ only in
  the values of a large array have the same digest.

  Function names carry process-wide counters, so each function reachable
  from the dataset is renamed by its order of first use before hashing:
  the same input_fn gives the same digest in any graph or process.
  """
  graph_def = graph_structure.sub_graph_def(graph, [dataset.op.name])
  functions = {f.signature.name: f for f in graph_def.library.function}
  renamed = {}

  def visit_function(name_attr_list):
    name = name_attr_list.name
    if name in functions and name not in renamed:
      renamed[name] = 'function_%d' % len(renamed)
      for node in functions[name].node_def:
        visit_attrs(node.attr)
    if name in renamed:
      name_attr_list.name = renamed[name]
    visit_attrs(name_attr_list.attr)

  def visit_attrs(attrs):
    for key in sorted(attrs):
      if attrs[key].HasField('func'):
        visit_function(attrs[key].func)
      for function in attrs[key].list.func:
        visit_function(function)

  for node in graph_def.node:
    visit_attrs(node.attr)
  digest = hashlib.sha256()
  if not named:
    _anonymize(graph_def)
  for node in graph_def.node:
    digest.update(node.SerializeToString(deterministic=True))
  for name in sorted(renamed, key=renamed.get):
    function = functions[name]
    function.signature.name = renamed[name]
    digest.update(function.SerializeToString(deterministic=True))
  return digest.hexdigest()[:16]


def _anonymize(graph_def):
  """Names each node of `graph_def` by its position, and clears devices."""
  names = {node.name: 'node_%d' % i for i, node in enumerate(graph_def.node)}
  for node in graph_def.node:
    node.name = names[node.name]
    node.device = ''
    for i, source in enumerate(node.input):
      control = source.startswith('^')
      name, _, port = source.lstrip('^').partition(':')
      node.input[i] = ('^' if control else '') + names[name] + (
          ':' + port if port else '')


class _StateSaveable(saveable_object.SaveableObject):
  """Lets a Saver write a serialized iterator state; restoring goes
  through InputPosition.restore instead."""

  def __init__(self, state, name):
    spec = saveable_object.SaveSpec(state, '', name)
    super(_StateSaveable, self).__init__(state, [spec], name)

  def restore(self, restored_tensors, restored_shapes):
    del restored_tensors, restored_shapes
    return tf.no_op()


def _state_variable(name):
  return tf.raw_ops.VarHandleOp(dtype=tf.variant,
                                shape=tf.TensorShape(None),
                                shared_name='hookestimator_input_' + name,
                                name=name)


def _read(variable):
  return tf.raw_ops.ReadVariableOp(resource=variable, dtype=tf.variant)


class InputPosition(object):
  """Snapshots, saves and restores the iterator that `initializer` starts.

  Build it in the training graph before it is finalized; then, in the
  session, `start()` once before the first loop, `restore()` from the
  checkpoint the session resumed from, `snapshot_op` (or `rewind_op`, to
  save the input's beginning after it ended) at each checkpoint, and give
  `saveable` to the saver that writes the snapshots.
  """

  def __init__(self, initializer, save_device=None, label=''):
    dataset, iterator = initializer.inputs[0], initializer.inputs[1]
    self.key = KEY_PREFIX + label + fingerprint(initializer.graph, dataset)
    graph = initializer.graph
    with graph.as_default(), v1.name_scope('input_position'):
      with v1.colocate_with(iterator.op):
        serialized = compat.serialize_iterator(iterator)
        start = _state_variable('start')
        state = _state_variable('state')
        self._keep_start_op = tf.raw_ops.AssignVariableOp(resource=start,
                                                          value=serialized)
        self.snapshot_op = tf.raw_ops.AssignVariableOp(resource=state,
                                                       value=serialized)
        self.rewind_op = tf.raw_ops.AssignVariableOp(resource=state,
                                                     value=_read(start))
        saved = _read(state)
      # With `save_device` (the chief's, in a cluster) the state is read
      # into the checkpoint there and restored from it there, so the task
      # that holds the iterator touches no file.
      with _on(save_device, graph):
        if save_device is not None:
          saved = tf.identity(saved)
        self.saveable = _StateSaveable(saved, self.key)
        self._prefix = v1.placeholder(tf.string, [], name='checkpoint')
        restored = tf.raw_ops.RestoreV2(
            prefix=self._prefix, tensor_names=[self.key],
            shape_and_slices=[''], dtypes=[tf.variant])[0]
      with v1.colocate_with(iterator.op):
        self._restore_op = tf.raw_ops.DeserializeIterator(
            resource_handle=iterator, serialized=restored)

  @property
  def saveables(self):
    """{checkpoint key: saveable} of the position."""
    return {self.key: self.saveable}

  def start(self, session):
    """Keeps the input's beginning; returns whether its state can be saved.

    Run once the iterator is initialised and before anything reads it.
    """
    try:
      session.run(self._keep_start_op)
      return True
    except tf.errors.OpError as error:
      log.warning(
          'The input position cannot be saved with checkpoints (%s); a run '
          'resumed from a checkpoint starts the input from its beginning.',
          _reason(error))
      return False

  def restore(self, session, checkpoint_path, keys):
    """Continues the input where `checkpoint_path` (holding `keys`) left it.

    Returns whether a position was restored.
    """
    if self.key in keys:
      session.run(self._restore_op, {self._prefix: checkpoint_path})
      log.info('Input position restored from checkpoint %s.',
               checkpoint_path)
      return True
    if any(is_input_position_key(key) for key in keys):
      log.warning('Checkpoint %s holds the position of a different input '
                  'pipeline; this input starts from its beginning.',
                  checkpoint_path)
    else:
      log.info('Checkpoint %s holds no input position; the input starts '
               'from its beginning.', checkpoint_path)
    return False


class InputPositions(object):
  """Several inputs' positions (one per worker of a cluster) saved and
  restored together, with InputPosition's interface."""

  def __init__(self, positions):
    self._positions = list(positions)
    self.snapshot_op = tf.group(*[p.snapshot_op for p in self._positions])
    self.rewind_op = tf.group(*[p.rewind_op for p in self._positions])

  @property
  def saveables(self):
    saveables = {}
    for position in self._positions:
      saveables.update(position.saveables)
    return saveables

  def start(self, session):
    return all([p.start(session) for p in self._positions])

  def restore(self, session, checkpoint_path, keys):
    return all([p.restore(session, checkpoint_path, keys)
                for p in self._positions])


def for_infeed(infeed):
  """The position of `infeed`'s input: one InputPosition, or with one part
  per feeder (feeder_tasks.FeederInfeeds)
  one per part, each under a key naming its part; None for input whose
  position cannot be saved (tensor_input.TensorInfeed's)."""
  if not getattr(infeed, 'saves_position', True):
    return None
  parts = getattr(infeed, 'parts', None)
  if parts is None:
    return InputPosition(infeed.initializer)
  return InputPositions([
      InputPosition(part.initializer, save_device=infeed.save_device,
                    label='%s_%d_' % (infeed.part_label, index))
      for index, part in enumerate(parts)])


def _on(device, graph):
  """`device`'s scope, outside any colocation; nothing when None."""
  if device is None:
    return contextlib.nullcontext()
  stack = contextlib.ExitStack()
  stack.enter_context(graph.colocate_with(None, ignore_existing=True))
  stack.enter_context(tf.device(device))
  return stack


_ERROR_HEADERS = ('Graph execution error:', 'Detected at node', 'Node:')


def _reason(error):
  """The line of an OpError's message that says what failed.

  TF 2.x starts graph execution errors with a 'Graph execution error:'
  header and the Python traceback of the node that failed; the reason
  ('RandomUniform is stateful.') follows them.
  """
  for line in error.message.splitlines():
    if (line.strip() and not line[0].isspace() and
        not line.startswith(_ERROR_HEADERS) and not line.startswith('[[')):
      return line.strip()
  return error.message.strip().split('\n')[0]
