"""Runs host_call on the values the outfeed brings back, and writes summaries.

`OutfeedReader.read_loop(session, count)` is the outfeed controller's work
for one loop: ONE session.run dequeues the loop's steps and, when the
host_call fn returns a dict of scalars, evaluates fn on every step inside
the same run (a map over the steps). Each step's loss and scalars are
written as TensorBoard scalars at that step's global step.

A host_call fn that builds summary ops itself (TPUEstimator-style, with a
tf.summary writer of its own, or v1 summaries it returns) is called once on
per-step placeholders and run once per step; returned serialized summaries
are written at the step, and the writers it made are opened and flushed.
"""
import logging

import numpy as np
import tensorflow as tf

from hookestimator import compat
from hookestimator.compat import v1

log = logging.getLogger(__name__)

# The tags the framework writes in training, beside host_call's own.
FRAMEWORK_TAGS = ('loss', 'loop_seconds', 'global_step/sec', 'examples/sec')
_TAG_INPUTS = ('tag', 'tags')


def summary_tags(ops):
  """The constant tags of the summary ops among `ops` (v1 summaries and
  tf.summary writes alike name theirs in an input called tag or tags)."""
  tags = set()
  for op in ops:
    if 'Summary' not in op.type:
      continue
    for index, arg in enumerate(op.op_def.input_arg):
      if arg.name in _TAG_INPUTS:
        value = tf.get_static_value(op.inputs[index])
        if value is not None:
          tags.update(t.decode() if isinstance(t, bytes) else str(t)
                      for t in np.ravel(value))
  return tags


def framework_tag_names(user_tags):
  """{framework tag: the name it is written under}: host_call owns its
  tags, so a framework tag it also writes takes the first free suffix
  (loss_1, loss_2, ...), as TPUEstimator names its own loss in that case."""
  names = {}
  for tag in FRAMEWORK_TAGS:
    name, suffix = tag, 0
    while name in user_tags:
      suffix += 1
      name = '%s_%d' % (tag, suffix)
    names[tag] = name
  return names


def scalar_dict_keys(host_call):
  """The sorted keys if host_call's fn returns a dict, else None.

  fn is tried in a graph of its own, so nothing it builds stays behind.
  """
  with tf.Graph().as_default():
    args = [v1.placeholder(t.dtype, t.shape) for t in host_call.tensors]
    try:
      result = host_call.call(args)
    except Exception:  # pylint: disable=broad-except
      # Not a pure function of its arguments: built (and its errors
      # reported) in the real graph instead.
      return None
  return sorted(result) if isinstance(result, dict) else None


def _scalar_values(host_call, keys, step_values):
  result = host_call.call(list(step_values))
  if not isinstance(result, dict) or sorted(result) != keys:
    raise ValueError('host_call fn returned %r; expected a dict with keys %s'
                     % (result, keys))
  values = []
  for key in keys:
    value = tf.convert_to_tensor(result[key])
    if value.shape.ndims != 0:
      raise ValueError('host_call fn returned %r with shape %s for %r; '
                       'expected a scalar' % (value, value.shape, key))
    values.append(tf.cast(value, tf.float32))
  return values


class OutfeedReader(object):
  """Drains the outfeed one loop at a time and runs host_call on it."""

  def __init__(self, outfeed, host_call, writer):
    self._outfeed = outfeed
    self._writer = writer
    stacked = list(outfeed.dequeue_op)
    self._fetches = {'step': stacked[0], 'loss': stacked[1]}
    self._keys = []
    self._per_step = None
    self._init_ops = []
    self._flush_ops = []
    self.tags = framework_tag_names(())
    if host_call is None:
      return
    host_values = stacked[2:]
    keys = scalar_dict_keys(host_call)
    if keys is not None:
      self.tags = framework_tag_names(keys)
      self._keys = keys
      self._fetches['scalars'] = v1.map_fn(
          lambda step_values: _scalar_values(host_call, keys, step_values),
          tuple(host_values), dtype=[tf.float32] * len(keys),
          # In step order: an error in fn names the first step it hit.
          parallel_iterations=1, back_prop=False, name='host_call')
    else:
      # No name scope here: it would prefix the tags of fn's summaries.
      placeholders = [v1.placeholder(t.dtype, t.shape)
                      for t in host_call.tensors]
      graph = v1.get_default_graph()
      first_op = len(graph.get_operations())
      result = host_call.call(placeholders)
      self.tags = framework_tag_names(summary_tags(
          graph.get_operations()[first_op:]))
      self._per_step = (placeholders, _as_fetch_list(result))
      self._fetches['values'] = host_values
      self._init_ops = compat.summary_writer_init_ops()
      self._flush_ops = compat.summary_writer_flush_ops(self._init_ops)

  @property
  def init_ops(self):
    """Ops that open the summary writers a host_call fn made."""
    return list(self._init_ops)

  def read_loop(self, session, count):
    """Handles up to `count` steps; returns how many came through."""
    out = self._outfeed.run_dequeue(session, self._fetches, count)
    if out is None:
      return 0
    steps = out['step']
    for index, step in enumerate(steps):
      # Estimator writes a step's loss at the global step after it (the
      # first step's loss at 1); host_call's scalars keep the step's own.
      loss = v1.Summary()
      loss.value.add(tag=self.tags['loss'],
                     simple_value=float(out['loss'][index]))
      self._writer.add_summary(loss, int(step) + 1)
      if self._keys:
        scalars = v1.Summary()
        for key, column in zip(self._keys, out['scalars']):
          scalars.value.add(tag=key, simple_value=float(column[index]))
        self._writer.add_summary(scalars, int(step))
    if self._per_step is not None:
      self._run_per_step(session, steps, out['values'])
    return len(steps)

  def _run_per_step(self, session, steps, values):
    placeholders, fetches = self._per_step
    if not fetches:
      return
    for index, step in enumerate(steps):
      feed = {p: v[index] for p, v in zip(placeholders, values)}
      for result in session.run(fetches, feed):
        if isinstance(result, bytes):
          self._writer.add_summary(result, int(step))

  def flush(self, session):
    if self._flush_ops:
      session.run(self._flush_ops)
    self._writer.flush()


def _as_fetch_list(result):
  if result is None:
    return []
  if isinstance(result, (list, tuple)):
    return [r for r in result if r is not None]
  if isinstance(result, dict):
    return list(result.values())
  return [result]
