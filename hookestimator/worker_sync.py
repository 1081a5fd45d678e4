"""What keeps a cluster's workers in step when each builds and runs its own
replicas (between-graph replication, as MultiWorkerMirroredStrategy
replicates): the gradients are joined by collective all-reduces inside the
loop (replicas.py); this module joins the tasks around it, through
collective ops of their own group (one CPU per worker), over TensorFlow's
gRPC runtime.

- At the start, the chief's variables, restored or initialised, are
  broadcast to every worker (`StartHook`), so that every replica starts
  from the same values; then each worker's replica copies are set from
  them, and its input continues from its own saved position.
- After every loop the tasks agree (`AgreementHook`, one all-reduce sum;
  TF 1.15's has no maximum) on what the chief decides: the next loop's size, whether to
  save a checkpoint now, and whether to stop (the chief's signal, or a
  worker's). So every task runs the same loops and stops after the same
  one.
- When a checkpoint is agreed, each worker writes its input position to
  model_dir/input_positions/worker_<i>/ at that step, and a barrier
  all-reduce follows before the chief writes the checkpoint: every
  checkpoint that exists has every worker's position beside it.

The ops are built in the same order on every task, so that their
collective instance keys agree.
"""
import logging
import os

import numpy as np
import tensorflow as tf
from tensorflow.python.ops import collective_ops

from hookestimator import input_position
from hookestimator import replicas as replicas_lib
from hookestimator.compat import v1

log = logging.getLogger(__name__)

# The collective group of the workers' CPUs (the replicas' is group 1).
TASK_GROUP_KEY = 2
POSITIONS_DIR = 'input_positions'
# The agreement's fields.
_STOP, _SAVE, _SIZE = range(3)
# How long the agreement at the end of a run waits for the other tasks:
# they end the same loop at about the same time (every step waits for all
# at its all-reduce), unless this task's input ended before theirs, which
# leaves them waiting at a step's all-reduce for this task.
END_AGREEMENT_SECS = 30


class UnevenInputError(RuntimeError):
  """A task's input ended while the other workers still had input."""


_SAME_LENGTH = ("every worker's input must give the same number of batches "
                '(repeat it and give train() steps or max_steps, or shard it '
                'evenly)')


def explained(error):
  """`error` as the run reports it: a collective op aborted mid-step (where
  TensorFlow aborts it when another task's run ended, as when that task's
  input ended before this one's) says what to do."""
  if (isinstance(error, tf.errors.OpError) and
      'Collective ops is aborted' in (error.message or '')):
    return UnevenInputError(
        'a step\'s all-reduce was aborted: another worker stopped in the '
        'middle of the run, as one does when its input ends before the '
        'others\'; %s. %s' % (_SAME_LENGTH, error.message.splitlines()[0]))
  return error


def positions_dir(model_dir, worker):
  return os.path.join(model_dir, POSITIONS_DIR, 'worker_%d' % worker)


class WorkerGroup(object):
  """The ops that join this task to the other workers, built in the
  training graph.

  Args:
    cluster: the cluster (this process's task is a worker or the chief).
    variables: the variables to broadcast from the chief (the graph's
      global variables, in the order every task makes them).
    copies_initializer: the op that sets this task's replica copies from
      its replica-0 variables.
    infeed: this task's infeed, whose input position workers save.
    model_dir: where positions are written.
    keep: how many positions a worker keeps (the chief's
      keep_checkpoint_max, its saves being the chief's).
  """

  def __init__(self, cluster, variables, copies_initializer, infeed,
               model_dir, keep=None):
    self.cluster = cluster
    self.is_chief = cluster.is_chief
    self.worker = cluster.worker_index
    self._size = cluster.num_workers
    self._device = cluster.task_cpu
    self._model_dir = model_dir
    self._copies_initializer = copies_initializer
    self._infeed = infeed
    with tf.device(self._device), v1.name_scope('worker_sync'):
      self.broadcast_op = self._broadcast(variables)
      self._proposal = v1.placeholder(tf.float32, [3], name='proposal')
      # Only the chief proposes a save and a size; any task a stop.
      self.agreed = self._all_reduce(self._proposal, 'Add')
      self.barrier = self._all_reduce(tf.constant([1.0]), 'Add')
    self.position = None
    self._position_saver = None
    if not self.is_chief and getattr(infeed, 'saves_position', True):
      self.position = input_position.InputPosition(
          infeed.initializer, label='worker_%d_' % self.worker)
      with tf.device(self._device):
        self._position_saver = v1.train.Saver(
            self.position.saveables, sharded=False, max_to_keep=keep,
            write_version=v1.train.SaverDef.V2)
    self.position_saved = False

  def _all_reduce(self, value, merge_op):
    return collective_ops.all_reduce(
        value, self._size, TASK_GROUP_KEY, replicas_lib.next_instance_key(),
        merge_op, 'Id')

  def _broadcast(self, variables):
    ops = []
    for variable in variables:
      if not variable.shape.is_fully_defined():
        raise ValueError(
            'variable %s has the shape %s; a cluster broadcasts the chief\'s '
            'variables to the workers, which needs fully defined shapes' %
            (variable.op.name, variable.shape))
      key = replicas_lib.next_instance_key()
      dtype = variable.dtype.base_dtype
      if self.is_chief:
        ops.append(collective_ops.broadcast_send(
            variable.read_value(), variable.shape, dtype, self._size,
            TASK_GROUP_KEY, key))
      else:
        ops.append(variable.assign(collective_ops.broadcast_recv(
            variable.shape, dtype, self._size, TASK_GROUP_KEY, key)).op)
    return tf.group(*ops, name='broadcast_variables')

  # -------------------------------------------------------------- at start
  def start(self, session):
    """Every worker takes the chief's variables; the workers' replica
    copies follow, and their inputs continue from their saved positions."""
    session.run(self.broadcast_op)
    session.run(self._copies_initializer)
    if self.position is None or not self.position.start(session):
      return
    self.position_saved = True
    step = int(session.run(v1.train.get_global_step()))
    path = self._position_path(step)
    if not tf.io.gfile.exists(path + '.index'):
      if step > 0:
        log.info('Worker %d has no input position at step %d (%s); its '
                 'input starts from its beginning.', self.worker, step, path)
      return
    keys = v1.train.NewCheckpointReader(path).get_variable_to_dtype_map()
    self.position.restore(session, path, keys)

  def _position_path(self, step):
    return os.path.join(positions_dir(self._model_dir, self.worker),
                        'position-%d' % step)

  # ---------------------------------------------------------- every loop
  def agree(self, session, stop, save, size, timeout=None):
    """The tasks' common decision: (stop, save, next loop size). Only the
    chief's save and size count; any task's stop does. With `timeout`
    (seconds), a DeadlineExceededError when the others do not join."""
    proposal = np.zeros([3], np.float32)
    proposal[_STOP] = 1.0 if stop else 0.0
    if self.is_chief:
      proposal[_SAVE] = 1.0 if save else 0.0
      proposal[_SIZE] = float(size)
    options = (None if timeout is None else
               v1.RunOptions(timeout_in_ms=int(timeout * 1000)))
    agreed = session.run(self.agreed, {self._proposal: proposal},
                         options=options)
    return (bool(agreed[_STOP] > 0), bool(agreed[_SAVE] > 0),
            int(round(agreed[_SIZE])))

  def save_position(self, session, step):
    """A worker's input position at `step`, then the barrier the chief
    waits at before it writes the checkpoint of `step`. Once the input has
    ended, the position saved is its beginning, as the chief's checkpoint
    then records its own (the next train() reads the input again)."""
    if self._position_saver is not None and self.position_saved:
      ended = bool(getattr(self._infeed, 'input_ended', False))
      session.run(self.position.rewind_op if ended else
                  self.position.snapshot_op)
      directory = positions_dir(self._model_dir, self.worker)
      tf.io.gfile.makedirs(directory)
      self._position_saver.save(session, self._position_path(step),
                                write_meta_graph=False,
                                write_state=False)
    session.run(self.barrier)


class StartHook(v1.train.SessionRunHook):
  """First of the training hooks: the broadcast at the session's start,
  before any hook reads the global step; then the tasks agree whether a
  signal that landed while they started stops them before the first
  loop."""

  def __init__(self, group, signal_stop):
    self._group = group
    self._signal_stop = signal_stop

  def after_create_session(self, session, coord):
    self._group.start(session)
    stop, _, _ = self._group.agree(
        session, self._signal_stop.signal_number is not None, False, 1)
    if stop:
      coord.request_stop()


class AgreementHook(v1.train.SessionRunHook):
  """After every loop (after the loop-size hook, before the checkpoint
  hook): the tasks agree on the next loop's size, a checkpoint, and
  stopping; workers save their input positions where a checkpoint is
  agreed, also at the end.

  Args:
    group: the WorkerGroup.
    loop_state: the shared LoopState (its size is the chief's proposal and
      becomes the agreed size).
    global_step_after: the step after a loop.
    signal_stop: this process's signals.SignalStop.
    checkpoints: the chief's CheckpointHook (None on workers).
  """

  def __init__(self, group, loop_state, global_step_after, signal_stop,
               checkpoints=None):
    self._group = group
    self._loop_state = loop_state
    self._global_step_after = global_step_after
    self._signal_stop = signal_stop
    self._checkpoints = checkpoints
    self._step = None

  def before_run(self, run_context):
    return v1.train.SessionRunArgs(self._global_step_after)

  def after_run(self, run_context, run_values):
    step = int(run_values.results)
    self._step = step
    size = self._loop_state.iterations
    stop = self._signal_stop.signal_number is not None or size == 0
    save = self._checkpoints is not None and self._checkpoints.due(step)
    stop, save, size = self._group.agree(run_context.session, stop, save,
                                         size)
    if save:
      self._group.save_position(run_context.session, step)
    if self._checkpoints is not None:
      self._checkpoints.agreed_save = save
    self._loop_state.iterations = size
    if stop or size == 0:
      run_context.request_stop()

  def end(self, session):
    step = int(session.run(v1.train.get_global_step()))
    if self._checkpoints is not None:
      save = self._checkpoints.due_at_end(step)
    else:
      save = True
    # The chief writes its final checkpoint after this (its hook comes
    # later): every worker's position of that step first.
    try:
      _, save, _ = self._group.agree(session, True, save, 0,
                                     timeout=END_AGREEMENT_SECS)
    except tf.errors.DeadlineExceededError:
      raise UnevenInputError(
          'the input of %s ended at step %d while the other workers still '
          'had input, and they wait for its next step: %s. The run stops '
          'at the last checkpoint.' % (
              self._group.cluster.describe(self._group.cluster.task), step,
              _SAME_LENGTH))
    if save:
      self._group.save_position(session, step)
