"""The on-device training loop, and LoopState, the loop size both hooks share.

One session.run of `DeviceLoop.train_op` runs `iterations` training steps:
each step dequeues a batch from the infeed, runs the model's train_op and
enqueues the step's values (global step, loss, host_call tensors) to the
outfeed.
"""
import contextlib
import threading

import tensorflow as tf

from hookestimator import compat
from hookestimator import nan
from hookestimator import outside_loop
from hookestimator import replicas as replicas_lib
from hookestimator import spec as spec_lib
from hookestimator.compat import v1


# Graph collection holding [global step after the loop, last step's loss],
# so that hooks outside the framework (a progress bar) can fetch them.
LOOP_OUTPUTS = 'hookestimator_loop_outputs'


def loop_outputs(graph=None):
  """(global step after the loop, loss of its last step) of the training
  loop in `graph` (the default graph when None)."""
  graph = graph or v1.get_default_graph()
  outputs = graph.get_collection(LOOP_OUTPUTS)
  if len(outputs) != 2:
    raise ValueError('The graph holds no hookestimator training loop (its '
                     '%r collection has %d items, expected 2)' %
                     (LOOP_OUTPUTS, len(outputs)))
  return tuple(outputs)


class LoopState(object):
  """The number of steps in the next device loop.

  The loop-size hook sets it; the feeding hook reads it to signal its
  controllers. One explicit object passed to both, under a lock.
  """

  def __init__(self):
    self._lock = threading.Lock()
    self._iterations = None

  @property
  def iterations(self):
    with self._lock:
      return self._iterations

  @iterations.setter
  def iterations(self, value):
    with self._lock:
      self._iterations = value


def create_global_step(graph):
  """A resource int64 global step: reads inside the loop are copies, so a
  step's value cannot change under it when train_op increments it."""
  if v1.train.get_global_step(graph) is not None:
    raise ValueError('The graph already has a global step')
  with graph.as_default(), graph.name_scope(None):
    return v1.get_variable(
        v1.GraphKeys.GLOBAL_STEP, shape=[], dtype=tf.int64,
        initializer=v1.zeros_initializer(), trainable=False, use_resource=True,
        collections=[v1.GraphKeys.GLOBAL_VARIABLES, v1.GraphKeys.GLOBAL_STEP])


_READ_OPS = ('ReadVariableOp',)
_WRITE_OPS = ('AssignAddVariableOp', 'AssignSubVariableOp',
              'AssignVariableOp')


def order_reads_before_writes(handle, ops):
  """Makes every read of the variable `handle` among `ops` run before every
  write of it among `ops`, unless the read depends on the write.

  model_fn reads the global step (`tf.reshape(global_step, [1])` for a
  host_call, a learning-rate schedule) with nothing ordering the read
  against minimize()'s increment, so inside a loop it could see either
  value. TPUEstimator programs expect the value at the start of the step.
  `ops` are in creation order, so inputs come before the ops using them.
  """
  reads = []
  writes = []
  after_write = set()
  for op in ops:
    uses_handle = bool(op.inputs) and op.inputs[0].name == handle.name
    if uses_handle and op.type in _WRITE_OPS:
      writes.append(op)
      after_write.add(op)
      continue
    if any(t.op in after_write for t in op.inputs) or any(
        c in after_write for c in op.control_inputs):
      after_write.add(op)
    elif uses_handle and op.type in _READ_OPS:
      reads.append(op)
  for write in writes:
    missing = [r for r in reads if r not in write.control_inputs]
    if missing:
      write._add_control_inputs(missing)  # pylint: disable=protected-access


class SessionRunWhileBuilding(RuntimeError):
  """model_fn ran a session on the graph while the loop was being built."""


@contextlib.contextmanager
def no_session_runs(graph):
  """A session run on `graph` from this thread raises inside: a while_loop
  holds the graph's mutation lock while it builds its body, so the run
  would wait on it forever. Keras 2 runs one when a TensorFlow op is
  applied to keras.Input tensors, to read the op's constant inputs."""
  builder = threading.get_ident()
  run_lock = graph._session_run_lock  # pylint: disable=protected-access

  def guarded():
    if threading.get_ident() == builder:
      raise SessionRunWhileBuilding(
          'model_fn ran a session on its graph while the device loop was '
          'being built, which would wait forever on the loop. Keras does '
          'this when a TensorFlow op (tf.concat, +, ...) is applied to '
          'keras.Input tensors: it evaluates the op\'s constant inputs. '
          'Apply such ops inside a keras.layers.Lambda layer, or to the '
          'model\'s outputs rather than to its keras.Input tensors')
    return run_lock()

  graph._session_run_lock = guarded  # pylint: disable=protected-access
  try:
    yield
  finally:
    del graph._session_run_lock  # pylint: disable=protected-access


def run_on_device(device, device_loop, iterations):
  """Builds `device_loop(iterations)` to run on `device`: on TPU as one TPU
  program whose loop size is an input."""
  # Resource variables, so that variables made inside the loop body are
  # created outside it (their initialisers cannot live in a loop).
  with v1.variable_scope(v1.get_variable_scope(), use_resource=True), \
      no_session_runs(v1.get_default_graph()):
    if device.kind == 'tpu':
      return v1.tpu.rewrite(device_loop, [iterations])
    outputs = device_loop(iterations)
  # Initialisers model_fn built in the loop (init_from_checkpoint's, a
  # table's) run outside it, as they do under Estimator.
  outside_loop.move_out_of_loop(v1.get_default_graph())
  return outputs


class DeviceLoop(object):
  """The built training loop.

  Attributes:
    iterations: int32 placeholder, the number of steps this run.
    train_op: runs the loop; fetch it (or the tensors below) once per loop.
    global_step_after: the global step once the loop has finished.
    last_loss: the loss of the loop's last step.
    spec: the HookEstimatorSpec the model_fn returned.
    host_call: the validated HostCall, or None.

  Each step outfeeds [global step at the step's start, loss, *host_call
  tensors], after the step's train_op has run.
  """

  def __init__(self, global_step, infeed, outfeed, call_model_fn, device,
               check_nan_loss=False, replica_devices=None,
               group_size=None):
    self.iterations = v1.placeholder(tf.int32, [], name='iterations')
    self.spec = None
    self.host_call = None
    # Off a TPU the loop is replicated by hand (replicas.py), one replica
    # when replica_devices is None; on a TPU, one core runs it.
    off_tpu = device.kind != 'tpu'
    replica_devices = replica_devices or [device.model_device]
    count = len(replica_devices)
    # With `group_size`, these replicas are this task's part of a
    # cluster's: collective all-reduces join them to the other tasks'.
    collective = group_size is not None
    group = group_size or count
    self.mirrored = replicas_lib.MirroredVariables()

    def replica_scope(index, sums):
      """Builds replica `index`; yields the handle of its global step as
      the loop body sees it."""
      stack = contextlib.ExitStack()
      stack.enter_context(replicas_lib.top_level_names())
      if off_tpu:
        stack.enter_context(tf.device(replica_devices[index]))
        stack.enter_context(sums.recording(index))
      step = global_step
      if index > 0:
        step = stack.enter_context(self.mirrored.replica(index, global_step))
      else:
        stack.enter_context(self.mirrored.first())
      # A raw read, so that its input is the handle as this loop body sees
      # it, the one model_fn's own reads use.
      handle = tf.raw_ops.ReadVariableOp(resource=step.handle,
                                         dtype=tf.int64).op.inputs[0]
      return stack, handle

    def step(i, unused_last_loss):
      with tf.control_dependencies([i]):
        step_value = tf.raw_ops.ReadVariableOp(resource=global_step.handle,
                                               dtype=tf.int64)
      with tf.control_dependencies([step_value]):
        per_replica = replicas_lib.unstack(infeed.dequeue(), count)
      sums = replicas_lib.CrossReplicaSums(group, replica_devices,
                                           collective=collective)
      specs = []
      graph = v1.get_default_graph()
      for index, (features, labels) in enumerate(per_replica):
        stack, handle = replica_scope(index, sums)
        with stack:
          first_model_op = len(graph.get_operations())
          spec = spec_lib.as_hook_spec(
              call_model_fn(features, labels, compat.ModeKeys.TRAIN))
          spec_lib.check_train_spec(spec)
          # Replica 0's step is the global step itself: the loop's own read
          # (the step's label) must also come before an increment model_fn
          # makes without minimize(), as `global_step.assign(gs + 1)`.
          own_reads = [step_value.op] if index == 0 else []
          order_reads_before_writes(
              handle, own_reads + graph.get_operations()[first_model_op:])
        specs.append(spec)
      if off_tpu:
        if group > 1 and sums.count == 0:
          raise ValueError(
              'model_fn made no cross-replica sum, so %d replicas would '
              'train apart: wrap the optimizer in '
              'tf.compat.v1.tpu.CrossShardOptimizer, or sum the gradients '
              'with tf.compat.v1.tpu.cross_replica_sum' % group)
        sums.wire()
      self.spec = specs[0]
      with (tf.device(replica_devices[0]) if off_tpu and replica_devices[0]
            else contextlib.nullcontext()):
        losses = [tf.cast(s.loss, tf.float32) for s in specs]
        if collective:  # The mean over every task's replicas.
          loss = replicas_lib.collective_sum(
              losses, replica_devices, replicas_lib.COLLECTIVE_GROUP_KEY,
              replicas_lib.next_instance_key(), group_size=group)[0] / group
        else:
          loss = losses[0] if count == 1 else tf.add_n(losses) / count
        if check_nan_loss and off_tpu:
          loss = nan.checked_loss(loss, step_value)
        outfed = [step_value, loss]
        if self.spec.host_call is not None:
          host_calls = [s.host_call for s in specs]
          if collective:  # Every task's replicas' rows, in replica order.
            host_calls = [replicas_lib.gather_host_calls(
                host_calls, replica_devices, group)]
          self.host_call = spec_lib.HostCall(
              replicas_lib.concat_host_calls(host_calls))
          outfed += self.host_call.tensors
        train_op = tf.group(*[s.train_op for s in specs])
        with tf.control_dependencies([train_op]):
          outfed = [tf.identity(t) for t in outfed]
          enqueue = outfeed.enqueue(outfed)
        with tf.control_dependencies([enqueue, train_op]):
          return i + 1, tf.identity(loss)

    def device_loop(iterations):
      return v1.while_loop(
          lambda i, _: i < iterations, step,
          [tf.constant(0), tf.constant(0.0)],
          parallel_iterations=1, name='device_loop')

    steps_done, self.last_loss = run_on_device(device, device_loop,
                                               self.iterations)
    with tf.control_dependencies([steps_done, self.last_loss]):
      self.global_step_after = global_step.read_value()
    self.train_op = self.global_step_after.op
    v1.add_to_collection(LOOP_OUTPUTS, self.global_step_after)
    v1.add_to_collection(LOOP_OUTPUTS, self.last_loss)
    outfeed.build_host_ops()
