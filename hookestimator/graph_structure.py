"""A graph's structure without the values of its large constants.

An input_fn that passes a numpy array to `Dataset.from_tensor_slices` puts
the whole array in the graph as a `Const` node. Written as it is, the graph
would carry the array into every event file (TensorBoard's graph view needs
only the structure) and through every digest of the graph. `graph_def`
returns a copy of the graph's definition in which each constant of more
than `LARGE_CONSTANT_BYTES` keeps its dtype and shape, so the graph view
shows the same node, and loses its values. The live graph is not changed.
"""
from hookestimator.compat import v1

# Constants whose values take at most this many bytes (scalars, shapes,
# small tables) keep them.
LARGE_CONSTANT_BYTES = 1024

_VALUE_FIELDS = ('tensor_content', 'half_val', 'float_val', 'double_val',
                 'int_val', 'string_val', 'scomplex_val', 'int64_val',
                 'bool_val', 'dcomplex_val', 'resource_handle_val',
                 'variant_val', 'uint32_val', 'uint64_val', 'float8_val')


def graph_def(graph):
  """A GraphDef of `graph` (a tf.Graph) whose large constants, in the
  graph and in its functions, keep their dtype and shape, not their
  values."""
  definition = graph.as_graph_def()
  strip_large_constants(definition)
  return definition


def strip_large_constants(definition):
  """Drops, in place, the values of each constant of `definition` (a
  GraphDef) larger than LARGE_CONSTANT_BYTES; returns how many."""
  nodes = list(definition.node) + [
      node for function in definition.library.function
      for node in function.node_def]
  stripped = 0
  for node in nodes:
    if node.op == 'Const' and 'value' in node.attr:
      tensor = node.attr['value'].tensor
      fields = _value_fields(tensor)
      if _value_bytes(tensor, fields) > LARGE_CONSTANT_BYTES:
        for field in fields:
          tensor.ClearField(field)
        stripped += 1
  return stripped


def _value_fields(tensor):
  # Older protos lack the newer fields (float8_val, say).
  return [f for f in _VALUE_FIELDS
          if tensor.DESCRIPTOR.fields_by_name.get(f) is not None]


def _value_bytes(tensor, fields):
  """The bytes of `tensor`'s values, without serializing it: a protobuf's
  ByteSize() encodes the whole message, 0.3 s for 128 MB."""
  size = len(tensor.tensor_content)
  for field in fields:
    if field == 'tensor_content':
      continue
    values = getattr(tensor, field)
    if field == 'string_val':
      size += sum(len(v) for v in values)
    else:
      size += 8 * len(values)  # at most 8 bytes a number
  return size


def sub_graph_def(graph, output_names):
  """graph_def(graph) cut down to what computes the nodes `output_names`
  (and the whole function library)."""
  return v1.graph_util.extract_sub_graph(graph_def(graph), list(output_names))
