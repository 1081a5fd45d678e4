"""The `hookestimator` command: runs a gin-configured experiment.

    hookestimator MODE --gin_file=runs/gpt2_tiny.gin --model_dir=runs/gpt2 \\
        [--gin_param='experiment.train_steps = 500']

MODE is train, evaluate (the latest checkpoint, on the model's held-out
data), predict (writes the held-out predictions as JSON lines into
model_dir), train_and_evaluate (evaluating every
experiment.eval_every_steps) or feed (a feeder task of a cluster, as
TF_CONFIG names it, serving the chief's training; see docs/cluster.md).

Everything about the experiment comes from gin: the model (a factory from
`models/`), the steps, the batch size, the loop size, checkpointing, hooks.
The command adds only what gin must not hold: the mode and model_dir. The
bundled `gin/` folder (installed as hookestimator/configs) is on the gin
search path, so the files in it are found from any directory. Bad configuration exits with status 2 before
anything is trained; model_dir is only ever added to.
"""
import argparse
import collections
import difflib
import inspect
import json
import logging
import os
import re
import sys

import gin
import numpy as np
import tensorflow as tf

from hookestimator import config as config_lib
from hookestimator import estimator as estimator_lib
from hookestimator import event_writer
from hookestimator import feeder_tasks
from hookestimator import task_server
from hookestimator import model_dir as model_dir_lib
from hookestimator.compat import v1
from hookestimator.progress import ProgressHook

log = logging.getLogger(__name__)

# The bundled experiments: the repository's gin/ folder, which the package
# carries as hookestimator/configs, in a checkout and when installed.
GIN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configs')
EXIT_CONFIG_ERROR = 2
# TensorBoard's tag for the operative config of a training run.
OPERATIVE_CONFIG_TAG = 'gin/operative_config'
MODES = ('train', 'evaluate', 'predict', 'train_and_evaluate', 'feed')

# The root injection sites: the estimator and its run config (the
# experiment function below and the model factories are the others).
HookEstimator = gin.external_configurable(estimator_lib.HookEstimator,
                                          module='hookestimator')
RunConfig = gin.external_configurable(config_lib.RunConfig,
                                      module='hookestimator')

Experiment = collections.namedtuple(
    'Experiment', ['model', 'train_steps', 'hooks', 'eval_steps',
                   'eval_every_steps', 'throttle_secs'])


@gin.configurable
def experiment(model=gin.REQUIRED, train_steps=gin.REQUIRED, hooks=(),
               eval_steps=None, eval_every_steps=None, throttle_secs=0):
  """What a run file configures.

  Args:
    model: a models.Model, from a model factory (`@gpt2()`).
    train_steps: the global step training ends at; a run in a model_dir
      already there trains nothing more.
    hooks: extra SessionRunHooks for training, built by gin (any
      configurable hook).
    eval_steps: batches per evaluation; None for the whole held-out set.
    eval_every_steps: steps between evaluations in train_and_evaluate.
    throttle_secs: on a cluster's evaluator task, the least time between
      the starts of two evaluations (docs/cluster.md).
  """
  return Experiment(
      model, config_lib.check_positive_int('experiment.train_steps',
                                           train_steps),
      list(hooks),
      config_lib.check_positive_int('experiment.eval_steps', eval_steps,
                                    allow_none=True),
      config_lib.check_positive_int('experiment.eval_every_steps',
                                    eval_every_steps, allow_none=True),
      config_lib.check_non_negative_number('experiment.throttle_secs',
                                           throttle_secs))


class ConfigError(Exception):
  """Bad configuration, found before anything ran."""


def _suggest(word, choices):
  close = difflib.get_close_matches(word, list(choices), n=1)
  return ' Did you mean %r?' % close[0] if close else ''


def _configurable_names():
  names = set()
  for selector, _ in gin.config._REGISTRY.items():  # pylint: disable=protected-access
    names.update([selector, selector.rsplit('.', 1)[-1]])
  return names


def _parameter_names(configurable):
  match = gin.config._REGISTRY.get_match(configurable)  # pylint: disable=protected-access
  if match is None:
    return []
  fn = match.wrapped
  return [name for name in inspect.signature(
      fn.__init__ if isinstance(fn, type) else fn).parameters
          if name != 'self']


def _explain_gin_error(error):
  """gin's message, with a close match for a misspelt name."""
  message = str(error)
  unknown = re.search(r"No configurable matching '([^']+)'", message)
  if unknown:
    return message + _suggest(unknown.group(1), _configurable_names())
  unknown = re.search(
      r"Configurable '([^']+)' doesn't have a parameter named '([^']+)'",
      message)
  if unknown:
    return message + _suggest(unknown.group(2),
                              _parameter_names(unknown.group(1)))
  return message


def _use_gin_dir():
  """Puts GIN_DIR on gin's search path, once.

  gin also looks for files inside importable Python packages, and a folder
  in the working directory named like a gin folder (runs/, say) makes that
  search crash; this command finds files only by path.
  """
  # pylint: disable=protected-access
  gin.config._FILE_READERS[:] = [
      entry for entry in gin.config._FILE_READERS
      if entry[1] is not gin.resource_reader.system_path_file_exists]
  if GIN_DIR not in gin.config._LOCATION_PREFIXES:
    gin.add_config_file_search_path(GIN_DIR)


def parse_gin(gin_files, gin_params):
  """Parses the gin files (searched in GIN_DIR too) and bindings."""
  _use_gin_dir()
  for path in gin_files:
    if not (os.path.isfile(path) or os.path.isfile(os.path.join(GIN_DIR,
                                                                path))):
      raise ConfigError('gin file %r not found in the current directory or '
                        'in %s%s' % (path, GIN_DIR, _suggest(
                            path, _gin_files_in(GIN_DIR))))
  try:
    gin.parse_config_files_and_bindings(gin_files, gin_params)
  except (ValueError, IOError, ImportError, SyntaxError) as error:
    raise ConfigError(_explain_gin_error(error))


def _gin_files_in(root):
  return [os.path.relpath(os.path.join(folder, name), root)
          for folder, _, names in os.walk(root) for name in names
          if name.endswith('.gin')]


def check_writable(model_dir):
  """Raises ConfigError unless model_dir is, or can be made, a writable
  directory."""
  try:
    model_dir_lib.check_writable(model_dir)
  except OSError as error:
    raise ConfigError(error.strerror or str(error))


def save_operative_config(model_dir, step):
  """Writes gin's operative config as a file (operative_config-<step>.gin,
  or -<step>-2.gin and so on after other runs at that step); returns
  (the file's path, the config's text)."""
  text = gin.operative_config_str()
  tf.io.gfile.makedirs(model_dir)
  path = os.path.join(model_dir, 'operative_config-%d.gin' % step)
  again = 1
  while tf.io.gfile.exists(path):  # an earlier run at this step: keep it
    again += 1
    path = os.path.join(model_dir, 'operative_config-%d-%d.gin' % (step,
                                                                   again))
  with tf.io.gfile.GFile(path, 'w') as f:
    f.write(text)
  return path, text


def operative_config_hook(text, step):
  """The hook that writes the operative config `text` as a TensorBoard text
  summary at `step`, through the training run's own event file."""
  return event_writer.TextSummaryHook(OPERATIVE_CONFIG_TAG, text, step)


def configure(argv):
  """Parses the command line and gin; returns (args, experiment, estimator).

  Raises ConfigError for any bad configuration.
  """
  args = _parser().parse_args(argv)
  parse_gin(args.gin_file, args.gin_param)
  try:
    exp = experiment()
    estimator = HookEstimator(
        exp.model.model_fn, config=RunConfig(model_dir=args.model_dir))
  except (ValueError, TypeError, RuntimeError) as error:
    raise ConfigError(_explain_gin_error(error))
  cluster = estimator.config.cluster
  if args.mode == 'feed' and (cluster is None or
                              cluster.task_type != 'feeder'):
    raise ConfigError(
        'feed runs on a task of the cluster\'s "feeder" job, and TF_CONFIG '
        'names %s; start the trainer with train' % (
            'no cluster' if cluster is None else
            'task %s' % cluster.describe(cluster.task)))
  evaluator = estimator.config.evaluator
  if evaluator is not None and args.mode not in ('train_and_evaluate',
                                                 'evaluate'):
    raise ConfigError(
        '%s does not run on the evaluator task (TF_CONFIG names %s): run '
        'train_and_evaluate on every task, the evaluator included' % (
            args.mode, evaluator.describe(evaluator.task)))
  if cluster is not None and args.mode not in ('train', 'feed',
                                               'train_and_evaluate'):
    raise ConfigError(
        '%s does not run on a cluster (TF_CONFIG names task %s): train on '
        "every task, then %s the chief's model_dir without TF_CONFIG" % (
            args.mode, cluster.describe(cluster.task), args.mode))
  if not is_worker(estimator):  # A worker writes its input positions alone.
    check_writable(args.model_dir)
  if args.mode in ('evaluate', 'predict') and (
      estimator.latest_checkpoint() is None):
    raise ConfigError('model_dir %r holds no checkpoint to %s; train first' %
                      (args.model_dir, args.mode))
  if args.mode == 'train_and_evaluate' and exp.eval_every_steps is None:
    raise ConfigError('train_and_evaluate needs experiment.eval_every_steps '
                      '(steps between evaluations); it is not set')
  return args, exp, estimator


def is_worker(estimator):
  """Whether this process is a worker or feeder of a cluster (not its
  chief)."""
  cluster = estimator.config.cluster
  return cluster is not None and not cluster.is_chief


def train(exp, estimator, stream=None, run_hooks=()):
  """Trains to exp.train_steps; returns the lines that report it."""
  progress = ProgressHook(exp.train_steps, estimator.train_batch_size,
                          stream=stream)
  estimator.train(exp.model.train_input_fn, max_steps=exp.train_steps,
                  hooks=[progress] + list(run_hooks) + exp.hooks)
  return _trained(estimator, progress)


def evaluate(exp, estimator, stream=None, run_hooks=()):
  """Evaluates the latest checkpoint on the held-out data."""
  del stream, run_hooks  # evaluation is short; no progress bar
  results = estimator.evaluate(exp.model.eval_input_fn, steps=exp.eval_steps)
  return ['Evaluated %s at global step %d: %s' % (
      estimator.model_dir, results['global_step'], _metrics(results)),
          '  TensorBoard: %s --logdir %s' % (_tensorboard(),
                                            estimator.model_dir)]


def predict(exp, estimator, stream=None, run_hooks=()):
  """Writes the predictions on the held-out data as JSON lines."""
  del stream, run_hooks
  step = estimator.checkpoint_step()
  path = os.path.join(estimator.model_dir, 'predictions-%d.jsonl' % step)
  count = 0
  with tf.io.gfile.GFile(path, 'w') as f:
    for prediction in estimator.predict(exp.model.eval_input_fn):
      f.write(json.dumps(_jsonable(prediction)) + '\n')
      count += 1
  return ['Predicted %d held-out examples at global step %d.' % (count, step),
          '  predictions: %s' % path]


def train_and_evaluate(exp, estimator, stream=None, run_hooks=()):
  """Trains to exp.train_steps, evaluating every exp.eval_every_steps."""
  progress = ProgressHook(exp.train_steps, estimator.train_batch_size,
                          stream=stream)
  rounds = estimator.train_and_evaluate(
      exp.model.train_input_fn, exp.model.eval_input_fn,
      max_steps=exp.train_steps, eval_every_steps=exp.eval_every_steps,
      eval_steps=exp.eval_steps,
      hooks=[progress] + list(run_hooks) + exp.hooks)
  return _trained(estimator, progress) + [
      '  eval at step %d: %s' % (r['global_step'], _metrics(r))
      for r in rounds]


def _metrics(results):
  return ', '.join('%s %.4g' % (k, v) for k, v in sorted(results.items())
                   if k != 'global_step')


def _jsonable(prediction):
  if isinstance(prediction, dict):
    return {k: _jsonable(v) for k, v in prediction.items()}
  value = np.asarray(prediction)
  return value.item() if value.ndim == 0 else value.tolist()


def main(argv=None, stream=None):
  """Runs the command; returns its exit status."""
  logging.basicConfig(level=logging.INFO,
                      format='%(asctime)s %(levelname)s %(message)s')
  # The progress hook reports; the per-loop throughput lines would repeat it.
  logging.getLogger('hookestimator.hooks').setLevel(logging.WARNING)
  v1.logging.set_verbosity(v1.logging.ERROR)
  try:
    args, exp, estimator = configure(argv)
  except ConfigError as error:
    print('hookestimator: configuration error: %s' % error, file=sys.stderr)
    return EXIT_CONFIG_ERROR
  # A worker trains its own replicas in step with the chief, a feeder
  # serves the chief's run; either then ends the process with the run's
  # status.
  if args.mode == 'feed':
    feeder_tasks.feed_forever(estimator.config)
  if is_worker(estimator):
    estimator.train(exp.model.train_input_fn, max_steps=exp.train_steps)
  if estimator.config.evaluator is not None:
    return _evaluator(args, exp, estimator)
  step = estimator.checkpoint_step()
  config_path, config_text = save_operative_config(args.model_dir, step)
  run_mode = {'train': train, 'evaluate': evaluate, 'predict': predict,
              'train_and_evaluate': train_and_evaluate}[args.mode]
  # A training run also shows the config in TensorBoard, from its one
  # event file; evaluate and predict keep it in the .gin file alone.
  lines = run_mode(exp, estimator, stream,
                   run_hooks=[operative_config_hook(config_text, step)])
  lines.append('  operative config: %s' % config_path)
  if args.mode in ('train', 'train_and_evaluate'):
    lines.append(
        'The same command again resumes from the checkpoint; raise '
        "experiment.train_steps (--gin_param='TRAIN_STEPS = N' with "
        'runs/base.gin) to train further.')
  print('\n' + '\n'.join(lines))
  return 0


def _evaluator(args, exp, estimator):
  """The evaluator task's run: it writes no operative config (the chief
  does) and ends non-zero when the chief was lost."""
  if args.mode == 'evaluate':
    lines = evaluate(exp, estimator)
  else:
    try:
      rounds = estimator.train_and_evaluate(
          exp.model.train_input_fn, exp.model.eval_input_fn,
          max_steps=exp.train_steps, eval_every_steps=exp.eval_every_steps,
          eval_steps=exp.eval_steps, throttle_secs=exp.throttle_secs)
    except task_server.LostTaskError as error:
      print('hookestimator: %s' % error, file=sys.stderr)
      return task_server.EXIT_LOST
    lines = ['Evaluated %s at global step %d: %s' % (
        estimator.model_dir, r['global_step'], _metrics(r)) for r in rounds]
  print('\n' + '\n'.join(lines))
  return 0


def _trained(estimator, progress):
  return [
      'Trained %s to global step %d%s.' % (
          estimator.model_dir, estimator.checkpoint_step(),
          '' if progress.loss is None else ', loss %.4f' % progress.loss),
      '  checkpoint:       %s' % estimator.latest_checkpoint(),
      '  TensorBoard:      %s --logdir %s' % (_tensorboard(),
                                                estimator.model_dir)]


def _tensorboard():
  """The tensorboard command beside this Python, if there is one."""
  beside = os.path.join(os.path.dirname(sys.executable), 'tensorboard')
  return beside if os.path.exists(beside) else 'tensorboard'



def _parser():
  parser = argparse.ArgumentParser(
      prog='hookestimator', description='Runs a gin-configured experiment.')
  parser.add_argument('mode', choices=MODES, help='what to run')
  parser.add_argument('--gin_file', action='append', default=[],
                      help='a gin file (repeatable); relative paths are also '
                      'looked up in %s' % GIN_DIR)
  parser.add_argument('--gin_param', action='append', default=[],
                      help="a gin binding such as 'experiment.train_steps=100' "
                      '(repeatable, applied after the files)')
  parser.add_argument('--model_dir', required=True,
                      help='where checkpoints, summaries and the operative '
                      'config go')
  return parser


def run():
  """The console script's entry point."""
  sys.exit(main())
