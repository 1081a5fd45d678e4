"""An EstimatorSpec's `eval_metric_ops`, run inside the evaluation loop.

A plain EstimatorSpec carries `{name: (value, update_op)}` pairs that
model_fn built, so they live in the loop body with the model. Each step
runs every update op, then reads the values; the loop sends the values
out with the step's other tensors, and the value after the last step with
real examples is the result. That is what Estimator's evaluation reports:
the values read once every batch has been added.

TPUEstimator evaluates these on the CPU (`use_tpu=False`, or
`eval_on_tpu=False`); a TPU evaluation needs
`TPUEstimatorSpec(eval_metrics=(metric_fn, tensors))`.
"""
import tensorflow as tf

from hookestimator.compat import v1

_READS = ('ReadVariableOp',)


def _ancestors(ops):
  """Every op that `ops` depend on, through inputs and control inputs."""
  seen = set()
  stack = list(ops)
  while stack:
    op = stack.pop()
    if op in seen:
      continue
    seen.add(op)
    stack.extend(t.op for t in op.inputs)
    stack.extend(op.control_inputs)
  return seen


def _reads_behind(tensors, stop):
  """The variable reads the values of `tensors` are computed from, not
  looking past ops in `stop` or past a read."""
  reads = []
  seen = set()
  stack = [t.op for t in tensors]
  while stack:
    op = stack.pop()
    if op in seen or op in stop:
      continue
    seen.add(op)
    if op.type in _READS:
      reads.append(op)
      continue
    for tensor in op.inputs:
      if tensor.dtype._is_ref_dtype:  # pylint: disable=protected-access
        reads.append(op)  # A TF 1 variable read by its consumer.
      else:
        stack.append(tensor.op)
  return reads


class MetricOps(object):
  """Validated eval_metric_ops, ordered to run in a loop step.

  Attributes:
    names: the metric names, sorted.
    tensors: their value tensors (scalars), each read after every update:
      what each step outfeeds, as an eval_metrics HostCall's tensors.
    variables: the local variables the updates change, to reset between
      evaluations.
  """

  def __init__(self, eval_metric_ops):
    self.names = sorted(eval_metric_ops)
    values, updates = [], []
    for name in self.names:
      pair = eval_metric_ops[name]
      if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise TypeError(
            'eval_metric_ops[%r] is %r; expected a (value, update_op) pair '
            'as tf.compat.v1.metrics functions return (Keras metric objects '
            'are not supported here)' % (name, pair))
      value, update = pair
      if not isinstance(value, tf.Tensor) or value.shape.ndims != 0:
        raise ValueError(
            'eval_metric_ops[%r] has the value %r; expected a scalar tensor '
            '(for other shapes, return TPUEstimatorSpec(eval_metrics=...))' %
            (name, value))
      values.append(value)
      updates.append(update.op if isinstance(update, tf.Tensor) else update)
    self.update = tf.group(*updates)
    before_update = _ancestors([self.update])
    context = self.update._get_control_flow_context()  # pylint: disable=protected-access
    for read in _reads_behind(values, before_update):
      if (read.graph is self.update.graph and
          read._get_control_flow_context() is context and  # pylint: disable=protected-access
          self.update not in read.control_inputs):
        read._add_control_inputs([self.update])  # pylint: disable=protected-access
    with tf.control_dependencies([self.update]):
      self.tensors = [tf.identity(v) for v in values]
    self.variables = _local_variables_of(before_update)


def _local_variables_of(ops):
  """The local variables whose handles are among `ops`; in a function
  body (control flow v2) a handle is captured from the graph around it."""
  names = set()
  for op in ops:
    names.add((op.graph, op.name))
    for outside, inside in getattr(op.graph, 'captures', ()):
      if inside.op is op:
        names.add((outside.op.graph, outside.op.name))
  variables = []
  for graph in {graph for graph, _ in names}:
    for v in graph.get_collection(v1.GraphKeys.LOCAL_VARIABLES):
      if (graph, v.op.name) in names:
        variables.append(v)
  return variables
