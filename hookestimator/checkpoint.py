"""CheckpointHook: saves at loop boundaries, every N steps or seconds, and at
the end of training, off the training thread.

With the framework's own saver (DefaultSaver) a save takes a snapshot of
every saved variable, and of the input position, in one session.run at the
loop boundary: the values all belong to the same step, and taking them
costs one memory copy of the variables, into copies kept beside them (so
the variables take twice their memory). A thread of its own then writes
the snapshot while training goes on. At most one write is in flight: the next save
waits for it, and the end of training waits for the last. A failed write
is raised on the training thread, with its type and message, at the next
loop boundary.

A model that brings its own saver (through scaffold_fn), or saves objects
that are not whole variables, is saved synchronously with that saver, and
without the input position.

Checkpoint files are written to a temporary name and renamed, and the
`checkpoint` index file is replaced atomically, by the Saver: a process
killed during a write leaves the previous checkpoint as the latest.
"""
import logging
import os
import threading
import time

import tensorflow as tf
from tensorflow.python.training.saving import saveable_object_util

from hookestimator import config as config_lib
from hookestimator.compat import v1
from hookestimator import input_position

log = logging.getLogger(__name__)

CHECKPOINT_BASENAME = 'model.ckpt'
WRITER_THREAD_NAME = 'CheckpointWriter'
# How long a failed run waits for the checkpoint write already in flight.
ABORT_WAIT_SECS = 300


def saved_name(variable):
  """The key a Saver gives `variable` in a checkpoint."""
  (name,) = saveable_object_util.op_list_to_dict([variable]).keys()
  return name


class DefaultSaver(v1.train.Saver):
  """The framework's saver, for models that bring none: every global
  variable and saveable object, sharded, with relative paths. It restores;
  CheckpointHook writes with a saver over snapshots of the same objects."""

  def __init__(self, keep_checkpoint_max):
    self.saved_objects = (v1.global_variables() +
                          v1.get_collection(v1.GraphKeys.SAVEABLE_OBJECTS))
    self.keep_checkpoint_max = keep_checkpoint_max
    super(DefaultSaver, self).__init__(
        var_list=self.saved_objects, max_to_keep=keep_checkpoint_max,
        sharded=True, save_relative_paths=True)


def _why_not_snapshot(saver):
  """Why `saver`'s checkpoints cannot be snapshotted, or None if they can."""
  if not isinstance(saver, DefaultSaver):
    return 'the model brings its own saver'
  for item in saver.saved_objects:
    if not isinstance(item, tf.Variable):
      return 'it saves %r, which is not a variable' % (item,)
    if getattr(item, '_save_slice_info', None) is not None:
      return 'variable %s is partitioned' % item.op.name
    if not item.shape.is_fully_defined():
      return 'variable %s has no static shape' % item.op.name
    if 'TPU' in (item.device or ''):
      return 'variable %s lives on a TPU' % item.op.name
  return None


class Snapshot(object):
  """Copies of the saver's variables (and the input position) taken in one
  session.run, and a saver that writes the copies under the original
  names."""

  def __init__(self, saver, input_position=None):
    copies, assigns = {}, []
    with v1.name_scope('checkpoint_snapshot'):
      for variable in saver.saved_objects:
        name = saved_name(variable)
        copy, assign = _copy_op(variable)
        copies[name] = copy
        assigns.append(assign)
      self._variables_op = tf.group(*assigns, name='variables')
      self.input_position = input_position
      # One saver without the input position, for a pipeline whose state
      # turns out not to be serializable, and one with it.
      self._savers = [_snapshot_saver(copies, saver.keep_checkpoint_max)]
      if input_position is not None:
        copies.update(input_position.saveables)
        self._savers.append(_snapshot_saver(copies,
                                            saver.keep_checkpoint_max))
    self.saves_input = False

  @property
  def saver(self):
    """The saver that writes the snapshots."""
    return self._savers[-1] if self.saves_input else self._savers[0]

  def take(self, session, rewind_input=False):
    """Snapshots the variables, and the input position (its beginning when
    `rewind_input`) if it is saved."""
    fetches = [self._variables_op]
    if self.saves_input:
      fetches.append(self.input_position.rewind_op if rewind_input else
                     self.input_position.snapshot_op)
    session.run(fetches)


def _snapshot_saver(copies, keep_checkpoint_max):
  return v1.train.Saver(var_list=dict(copies), max_to_keep=keep_checkpoint_max,
                        sharded=True, save_relative_paths=True)


def _copy_op(variable):
  """A variable outside every collection, and an op that copies
  `variable` into it."""
  with v1.colocate_with(variable):
    copy = v1.Variable(
        lambda: tf.zeros(variable.shape, variable.dtype.base_dtype),
        trainable=False, collections=[], use_resource=True,
        name=variable.op.name)
    value = variable.value()
    if variable.op.type != 'VarHandleOp':
      # A reference variable's value can alias its buffer, which later
      # steps update in place. (Assigning a resource variable's value to
      # the copy copies it, since the variable still holds it.)
      value = tf.raw_ops.DeepCopy(x=value)
    return copy, copy.assign(value, read_value=False)


class BackgroundWrite(object):
  """One checkpoint write at a time, each on a thread of its own; a failed
  write's error is kept for the training thread to raise."""

  def __init__(self):
    self._thread = None
    self._error = None
    self._lock = threading.Lock()

  def start(self, write):
    if self.in_flight():
      raise RuntimeError('a checkpoint write is already in flight')
    self._thread = threading.Thread(name=WRITER_THREAD_NAME,
                                    target=self._run, args=(write,))
    self._thread.daemon = True
    self._thread.start()

  def _run(self, write):
    try:
      write()
    except BaseException as error:  # pylint: disable=broad-except
      with self._lock:
        self._error = error

  def in_flight(self):
    return self._thread is not None and self._thread.is_alive()

  def wait(self, timeout=None):
    """Waits for the write in flight; raises its error if it failed."""
    if self._thread is not None:
      self._thread.join(timeout)
      if self._thread.is_alive():
        raise RuntimeError('The checkpoint write did not finish within %.0f '
                           'seconds' % timeout)
      self._thread = None
    self.raise_if_failed()

  def raise_if_failed(self):
    with self._lock:
      error, self._error = self._error, None
    if error is not None:
      raise error


class CheckpointHook(v1.train.SessionRunHook):
  """Saves a checkpoint when a loop ends at least `save_steps` steps or
  `save_secs` seconds after the last save, and once more at the end.

  The global step comes from the device loop's own read after the loop.
  With `infeed` (a feed.HostInfeed) the input position is saved too; when
  the input has ended, the last checkpoint records the input's beginning,
  so that the next train() reads it again from the start.
  """

  def __init__(self, model_dir, scaffold, global_step_after, save_steps=None,
               save_secs=None, infeed=None):
    if (save_steps is None) == (save_secs is None):
      raise ValueError('Give exactly one of save_steps and save_secs; got '
                       'save_steps=%r, save_secs=%r' % (save_steps, save_secs))
    save_steps = config_lib.check_positive_int('save_steps', save_steps,
                                               allow_none=True)
    save_secs = config_lib.check_positive_number('save_secs', save_secs)
    self._model_dir = model_dir
    self._path = os.path.join(model_dir, CHECKPOINT_BASENAME)
    self._scaffold = scaffold
    self._global_step_after = global_step_after
    self._infeed = infeed
    self._timer = v1.train.SecondOrStepTimer(every_secs=save_secs,
                                             every_steps=save_steps)
    self._wrote_meta_graph = False
    self._snapshot = None
    self._graph = None
    self._write = BackgroundWrite()
    self._position_in_last_save = False
    self.saved_steps = []
    # On a cluster, the tasks' agreement decides each save (worker_sync).
    self.agreed_save = None

  @property
  def asynchronous(self):
    """Whether saves are snapshots written off the training thread."""
    return self._snapshot is not None

  def begin(self):
    self._graph = v1.get_default_graph()
    reason = _why_not_snapshot(self._scaffold.saver)
    if reason is not None:
      log.info('Checkpoints are written on the training thread: %s.', reason)
      return
    position = (input_position.for_infeed(self._infeed)
                if self._infeed is not None else None)
    self._snapshot = Snapshot(self._scaffold.saver, position)

  def after_create_session(self, session, coord):
    # A session re-created after a preemption: the last write used the old one.
    self.abort()
    step = int(session.run(v1.train.get_global_step()))
    self._timer.update_last_triggered_step(step)
    if self._snapshot is None:
      return
    position = self._snapshot.input_position
    if position is not None and position.start(session):
      self._snapshot.saves_input = True
      self._restore_input_position(session, position, step)
    state = v1.train.get_checkpoint_state(self._model_dir)
    if state is not None:
      # Keeps counting toward keep_checkpoint_max across runs.
      self._snapshot.saver.recover_last_checkpoints(
          list(state.all_model_checkpoint_paths))

  def _restore_input_position(self, session, position, step):
    path = v1.train.latest_checkpoint(self._model_dir)
    if path is None:
      return
    reader = v1.train.NewCheckpointReader(path)
    keys = reader.get_variable_to_dtype_map()
    global_step_key = saved_name(v1.train.get_global_step())
    if (global_step_key not in keys or
        int(reader.get_tensor(global_step_key)) != step):
      log.info('The session did not resume from %s; the input starts from '
               'its beginning.', path)
      return
    position.restore(session, path, keys)

  def before_run(self, run_context):
    return v1.train.SessionRunArgs(self._global_step_after)

  def due(self, step):
    """Whether a loop ending at `step` is due a checkpoint."""
    return self._timer.should_trigger_for_step(step)

  def due_at_end(self, step):
    """Whether the run ending at `step` writes a final checkpoint."""
    input_ended = bool(getattr(self._infeed, 'input_ended', False))
    return (step != self._timer.last_triggered_step() or
            (input_ended and self._position_in_last_save))

  def after_run(self, run_context, run_values):
    self._write.raise_if_failed()
    step = int(run_values.results)
    save, self.agreed_save = self.agreed_save, None
    if save if save is not None else self.due(step):
      self._save(run_context.session, step)

  def end(self, session):
    step = int(session.run(v1.train.get_global_step()))
    input_ended = bool(getattr(self._infeed, 'input_ended', False))
    if self.due_at_end(step):
      self._save(session, step, rewind_input=input_ended)
    self._write.wait()

  def abort(self):
    """After a failure: waits for the write in flight; saves nothing new."""
    try:
      self._write.wait(ABORT_WAIT_SECS)
    except Exception:  # pylint: disable=broad-except
      log.exception('The checkpoint write in flight failed')

  def _save(self, session, step, rewind_input=False):
    self._timer.update_last_triggered_step(step)
    self.saved_steps.append(step)
    write_meta_graph = not self._wrote_meta_graph
    self._wrote_meta_graph = True
    if self._snapshot is None:
      path = self._scaffold.saver.save(session, self._path, global_step=step,
                                       write_meta_graph=write_meta_graph)
      log.info('Saved checkpoint %s', path)
      return
    start = time.monotonic()
    self._write.wait()  # At most one write in flight.
    waited = time.monotonic()
    self._snapshot.take(session, rewind_input)
    log.debug('Checkpoint of step %d: waited %.3f s for the previous write, '
              'snapshot in %.3f s', step, waited - start,
              time.monotonic() - waited)
    self._position_in_last_save = (self._snapshot.saves_input and
                                   not rewind_input)
    self._write.start(
        lambda: self._write_snapshot(session, step, write_meta_graph))

  def _write_snapshot(self, session, step, write_meta_graph):
    start = time.monotonic()
    # A thread's default graph is its own: the saver needs the training
    # graph (and, on TF 2.x, graph mode).
    with self._graph.as_default():
      path = self._snapshot.saver.save(session, self._path, global_step=step,
                                       write_meta_graph=False)
      if write_meta_graph:
        # The scaffold saver's meta graph restores the variables themselves.
        self._scaffold.saver.export_meta_graph(path + '.meta')
    log.info('Saved checkpoint %s in %.2f s', path, time.monotonic() - start)
