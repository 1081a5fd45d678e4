"""CheckpointHook: saves at loop boundaries, every N steps or seconds, and
at the end of training."""
import logging
import os

from hookestimator import config as config_lib
from hookestimator.compat import v1

log = logging.getLogger(__name__)

CHECKPOINT_BASENAME = 'model.ckpt'


class CheckpointHook(v1.train.SessionRunHook):
  """Saves a checkpoint when a loop ends at least `save_steps` steps or
  `save_secs` seconds after the last save, and once more at the end.

  The saver is the scaffold's (it honours keep_checkpoint_max); the global
  step comes from the device loop's own read after the loop.
  """

  def __init__(self, model_dir, scaffold, global_step_after, save_steps=None,
               save_secs=None):
    if (save_steps is None) == (save_secs is None):
      raise ValueError('Give exactly one of save_steps and save_secs; got '
                       'save_steps=%r, save_secs=%r' % (save_steps, save_secs))
    save_steps = config_lib.check_positive_int('save_steps', save_steps,
                                               allow_none=True)
    save_secs = config_lib.check_positive_number('save_secs', save_secs)
    self._path = os.path.join(model_dir, CHECKPOINT_BASENAME)
    self._scaffold = scaffold
    self._global_step_after = global_step_after
    self._timer = v1.train.SecondOrStepTimer(every_secs=save_secs,
                                             every_steps=save_steps)
    self._wrote_meta_graph = False
    self.saved_steps = []

  def after_create_session(self, session, coord):
    step = int(session.run(v1.train.get_global_step()))
    self._timer.update_last_triggered_step(step)

  def before_run(self, run_context):
    return v1.train.SessionRunArgs(self._global_step_after)

  def after_run(self, run_context, run_values):
    step = int(run_values.results)
    if self._timer.should_trigger_for_step(step):
      self._save(run_context.session, step)

  def end(self, session):
    step = int(session.run(v1.train.get_global_step()))
    if step != self._timer.last_triggered_step():
      self._save(session, step)

  def _save(self, session, step):
    self._timer.update_last_triggered_step(step)
    path = self._scaffold.saver.save(
        session, self._path, global_step=step,
        write_meta_graph=not self._wrote_meta_graph)
    self._wrote_meta_graph = True
    self.saved_steps.append(step)
    log.info('Saved checkpoint %s', path)
