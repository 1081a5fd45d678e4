"""What model_fn builds inside the device loop but runs outside it.

model_fn is built inside the device loop's while_loop, where Estimator
builds it in the graph's top level. Some of what it makes is run by the
session once, outside the loop: variable initialisers (rewritten by
`tf.compat.v1.train.init_from_checkpoint` into restores), table
initialisers, and any op a program puts in the graph's init collections.
Built inside the loop, such an op lives in the loop's frame (TF 1.x
control flow) or in its body's function graph (TF 2.x), and running it
outside fails ("has inputs from different frames", "must be from the same
graph").

`move_out_of_loop(graph)`, called once the loop is built, gives each such
op a copy built at the top level of `graph`, from the same inputs as seen
outside the loop, and puts the copy where the session looks for it. The
originals stay in the loop unused: nothing in the loop depends on them, so
they never run. An op that depends on a value of the loop itself cannot be
moved and is reported by name.
"""
import tensorflow as tf

from hookestimator.compat import v1

# Collections of ops or tensors that the session runs outside any loop.
_INIT_COLLECTIONS = (
    v1.GraphKeys.TABLE_INITIALIZERS, v1.GraphKeys.INIT_OP,
    v1.GraphKeys.LOCAL_INIT_OP, v1.GraphKeys.READY_OP,
    v1.GraphKeys.READY_FOR_LOCAL_INIT_OP)
# TF 1.x control flow: a loop invariant comes in through one of these.
_ENTER_OPS = ('Enter', 'RefEnter')


def move_out_of_loop(graph):
  """Moves the initialisers of `graph`'s variables, and the items of its
  init collections, that were built inside a loop, out of it (see the
  module docstring). Returns the number of ops moved."""
  mover = _Mover(graph)
  for variable in (graph.get_collection(v1.GraphKeys.GLOBAL_VARIABLES) +
                   graph.get_collection(v1.GraphKeys.LOCAL_VARIABLES)):
    initializer = getattr(variable, '_initializer_op', None)
    if initializer is not None and mover.inside(initializer):
      variable._initializer_op = mover.op(initializer)  # pylint: disable=protected-access
    initial_value = getattr(variable, '_initial_value', None)
    if isinstance(initial_value, tf.Tensor) and mover.inside(
        initial_value.op):
      variable._initial_value = mover.tensor(initial_value)  # pylint: disable=protected-access
  for key in _INIT_COLLECTIONS:
    items = graph.get_collection_ref(key)
    items[:] = [mover.item(item) for item in items]
  return len(mover.copies)


class _Mover(object):
  """Copies ops from inside a loop to the top level of `graph`."""

  def __init__(self, graph):
    self._graph = graph
    self.copies = {}

  def inside(self, op):
    """Whether `op` was built inside a loop of the graph."""
    return (op.graph is not self._graph or
            op._get_control_flow_context() is not None)  # pylint: disable=protected-access

  def item(self, item):
    if isinstance(item, tf.Operation) and self.inside(item):
      return self.op(item)
    if isinstance(item, tf.Tensor) and self.inside(item.op):
      return self.tensor(item)
    return item

  def tensor(self, tensor):
    """`tensor` as seen at the top level of the graph."""
    op = tensor.op
    if not self.inside(op):
      return tensor
    if op.graph is self._graph and op.type in _ENTER_OPS and not _loop_value(
        op):
      return self.tensor(op.inputs[0])
    if op.graph is not self._graph and op.type == 'Placeholder':
      outside = _captured(op.graph, tensor)
      if outside is None:
        raise _depends_on_loop(tensor)
      return self.tensor(outside)
    return self.op(op).outputs[tensor.value_index]

  def op(self, op):
    """A copy of `op` at the top level of the graph (made once)."""
    if not self.inside(op):
      return op
    if op in self.copies:
      return self.copies[op]
    if op.type in ('Merge', 'Switch', 'NextIteration', 'Exit',
                   'LoopCond') or (op.type in _ENTER_OPS and _loop_value(op)):
      raise _depends_on_loop(op)
    inputs = [self.tensor(t) for t in op.inputs]
    # What a loop adds (its pivot) is dropped; the program's own control
    # inputs are kept, moved too.
    control = [self.op(c) for c in op.control_inputs if not _loop_op(c)]
    attrs = {name: value for name, value in op.node_def.attr.items()
             if name != '_class'}
    colocated = [name for name in op.colocation_groups()
                 if self._outside_op(name.decode()[len('loc:@'):])]
    if colocated:
      attrs['_class'] = tf.compat.v1.AttrValue(
          list=tf.compat.v1.AttrValue.ListValue(s=colocated))
    with self._graph.as_default(), self._graph.control_dependencies(None), \
        self._graph.control_dependencies(control):
      copy = self._graph.create_op(
          op.type, inputs, [t.dtype for t in op.outputs],
          input_types=[t.dtype for t in op.inputs],
          name='outside_loop/' + op.name.split('/')[-1], attrs=attrs,
          op_def=op.op_def, compute_device=False)
    copy._set_device(op.device)  # pylint: disable=protected-access
    for original, copied in zip(op.outputs, copy.outputs):
      copied.set_shape(original.shape)
    self.copies[op] = copy
    return copy

  def _outside_op(self, name):
    try:
      return not self.inside(self._graph.get_operation_by_name(name))
    except KeyError:
      return False


def _loop_value(enter):
  """Whether a TF 1.x Enter op brings in a loop variable (not constant)."""
  return not enter.get_attr('is_constant')


def _loop_op(op):
  """Whether `op` is part of a TF 1.x loop's machinery (its pivot)."""
  return op.type in ('Switch', 'Merge', 'Identity', 'LoopCond') and any(
      t.op.type in ('Switch', 'Merge', 'LoopCond') for t in op.inputs) or (
          op.type in ('Switch', 'Merge', 'LoopCond'))


def _captured(func_graph, placeholder):
  """The outside tensor a TF 2.x function graph captured as
  `placeholder`, or None (a loop variable)."""
  for outside, inside in getattr(func_graph, 'captures', ()):
    if inside is placeholder:
      return outside
  return None


def _depends_on_loop(what):
  return ValueError(
      '%s, built by model_fn inside the device loop, runs outside the loop '
      '(an initialiser) but depends on a value of the loop; build it from '
      'values that do not change from step to step' % (what.name,))
