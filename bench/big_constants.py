"""Large in-memory inputs: a numpy array given to
`Dataset.from_tensor_slices` becomes a constant of the graph. How big are
the event files, how much memory and time do 100 steps take?

    python -m bench.big_constants --mb 16 128 512 [--steps 100] [--profile]

For each size, each system trains a small model (the bench MLP, 64 -> 256
-> 10, batch 64) for `--steps` steps from a fresh model_dir in an OS
process of its own, run one after the other: hookestimator
(`iterations_per_loop` 100) and, where tensorflow-estimator is installed,
tf.estimator.Estimator, both with their default checkpoint and summary
settings. The array is float32 of shape [rows, 64], `mb` MiB; the labels
are computed from it in the pipeline, so the array is the only large
constant. Printed per run:

- events MB: every event file under model_dir (eval/ included);
- other MB: everything else model_dir holds (checkpoints, .meta graphs);
- peak RSS MB: the child's maximum resident size (wait4's ru_maxrss);
- CPU s: the child's user + system time, the whole process;
- train s: the wall time of the train() call (graph building, session
  start and the steps), timed in the child; process s: the child's whole
  life (TensorFlow's import and the array's creation included).

`--profile` prints, per run, the functions with the most cumulative time
in train() (cProfile), for finding where a larger array costs time.

`--parts` times, instead, each step that reads the array, one child per
size: building the constant (`from_tensor_slices`), the graph's
definition (TensorFlow's `as_graph_def`, and graph_structure's copy
without large values), the input fingerprint, the event file's graph as
hookestimator writes it and as `FileWriter(graph=...)` did (graph and meta
graph with every value), and the iterator's initialisation in a session,
with TensorFlow's graph optimizer (grappler) on, as every run has it, and
off.
"""
from __future__ import absolute_import, division, print_function

import argparse
import cProfile
import io
import json
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time

NUM_FEATURES = 64
BATCH_SIZE = 64
RESULT_PREFIX = 'BIG_CONSTANTS_RESULT '


def _array(mb):
  import numpy as np  # pylint: disable=g-import-not-at-top
  rows = max(BATCH_SIZE, int(mb * (1 << 20)) // (4 * NUM_FEATURES))
  return np.random.RandomState(0).standard_normal(
      (rows, NUM_FEATURES)).astype(np.float32)


def _input_fn(array):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  def input_fn(params):
    batch = params.get('batch_size', BATCH_SIZE)
    return tf.data.Dataset.from_tensor_slices(array).map(
        lambda x: (x, tf.cast(x[0] > 0, tf.int32))).repeat().batch(
            batch, drop_remainder=True)
  return input_fn


def _step(features, labels):
  from bench import common  # pylint: disable=g-import-not-at-top
  _, loss, train_op = common.mlp_logits_loss_and_train_op(features, labels)
  return loss, train_op


def _make_train(system, model_dir, input_fn):
  """A function of steps training `system` from model_dir."""
  if system == 'hookestimator':
    import hookestimator as he  # pylint: disable=g-import-not-at-top

    def model_fn(features, labels, mode, params):
      del params
      loss, train_op = _step(features, labels)
      return he.HookEstimatorSpec(mode=mode, loss=loss, train_op=train_op)
    estimator = he.HookEstimator(
        model_fn, config=he.RunConfig(model_dir=model_dir,
                                      iterations_per_loop=100),
        train_batch_size=BATCH_SIZE)
  elif system == 'tf.estimator':
    from hookestimator import compat  # pylint: disable=g-import-not-at-top

    def model_fn(features, labels, mode, params):
      del params
      loss, train_op = _step(features, labels)
      return compat.ESTIMATOR.EstimatorSpec(mode=mode, loss=loss,
                                            train_op=train_op)
    estimator = compat.ESTIMATOR.Estimator(
        model_fn, config=compat.ESTIMATOR.RunConfig(model_dir=model_dir),
        params={'batch_size': BATCH_SIZE})
  else:
    raise ValueError('unknown system %r' % system)
  return lambda steps: estimator.train(input_fn, steps=steps)


def run_child(system, mb, steps, model_dir, profile):
  """Trains `steps` steps in this process; prints the result line."""
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)
  train = _make_train(system, model_dir, _input_fn(_array(mb)))
  profiler = cProfile.Profile() if profile else None
  start = time.monotonic()
  if profiler is not None:
    profiler.runcall(train, steps)
  else:
    train(steps)
  seconds = time.monotonic() - start
  if profiler is not None:
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats('cumulative').print_stats(
        60)
    sys.stderr.write(out.getvalue())
  print(RESULT_PREFIX + json.dumps({'train_seconds': seconds}))
  sys.stdout.flush()


def run_parts(mb, root):
  """Times each step that reads the array; prints one line per step."""
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from hookestimator import event_writer  # pylint: disable=g-import-not-at-top
  from hookestimator import graph_structure  # pylint: disable=g-import-not-at-top
  from hookestimator import input_position  # pylint: disable=g-import-not-at-top
  v1 = tf.compat.v1
  v1.logging.set_verbosity(v1.logging.ERROR)
  array = _array(mb)
  parts = []

  def timed(label, function):
    start = time.monotonic()
    result = function()
    parts.append((label, time.monotonic() - start))
    return result

  for grappler in (True, False):
    with tf.Graph().as_default() as graph:
      dataset = timed('from_tensor_slices (the constant)',
                      lambda: _input_fn(array)({}))
      iterator = v1.data.make_initializable_iterator(dataset)
      if grappler:
        timed('as_graph_def (TensorFlow)', graph.as_graph_def)
        timed('graph_structure.graph_def',
              lambda: graph_structure.graph_def(graph))
        timed('input fingerprint', lambda: input_position.fingerprint(
            graph, iterator.initializer.inputs[0]))
        directory = tempfile.mkdtemp(dir=root)
        timed('event file graph, FileWriter(graph=)', lambda: v1.summary.
              FileWriter(directory, graph=graph).close())
        writer = event_writer.EventWriter(directory, graph)
        timed('event file graph, EventWriter', lambda: writer.add_summary(
            event_writer.text_summary('t', 'x'), 0))
        writer.close()
      config = v1.ConfigProto()
      config.graph_options.rewrite_options.disable_meta_optimizer = (
          not grappler)
      with v1.Session(config=config) as session:
        timed('iterator init, grappler %s' % ('on' if grappler else 'off'),
              lambda: session.run(iterator.initializer))
  print(RESULT_PREFIX + json.dumps({'parts': parts}))
  sys.stdout.flush()


def _sizes(model_dir):
  """(event-file bytes, other bytes) under model_dir."""
  events = other = 0
  for folder, _, names in os.walk(model_dir):
    for name in names:
      size = os.path.getsize(os.path.join(folder, name))
      if name.startswith('events.out.tfevents'):
        events += size
      else:
        other += size
  return events, other


def measure(system, mb, steps, root, profile=False):
  """Runs one child; returns its figures as a dict."""
  model_dir = os.path.join(root, '%s-%gmb' % (system, mb))
  command = [sys.executable, '-m', 'bench.big_constants', '--child', system,
             '--mb', str(mb), '--steps', str(steps), '--model_dir', model_dir]
  if profile:
    command.append('--profile')
  start = time.monotonic()
  with tempfile.TemporaryFile() as out:
    child = subprocess.Popen(command, stdout=out, stderr=None)
    try:
      _, status, usage = os.wait4(child.pid, 0)
    except BaseException:
      child.kill()
      child.wait()
      raise
    child.returncode = os.waitstatus_to_exitcode(status) if hasattr(
        os, 'waitstatus_to_exitcode') else status >> 8
    process_seconds = time.monotonic() - start
    out.seek(0)
    text = out.read().decode('utf-8', 'replace')
  if child.returncode != 0:
    raise RuntimeError('%s at %g MB failed with status %d:\n%s' % (
        system, mb, child.returncode, text[-3000:]))
  line = [l for l in text.splitlines() if l.startswith(RESULT_PREFIX)][-1]
  result = json.loads(line[len(RESULT_PREFIX):])
  events, other = _sizes(model_dir)
  shutil.rmtree(model_dir, ignore_errors=True)
  return {'system': system, 'mb': mb,
          'events_mb': events / 1e6, 'other_mb': other / 1e6,
          'peak_rss_mb': usage.ru_maxrss / 1024.,  # Linux: KiB
          'cpu_seconds': usage.ru_utime + usage.ru_stime,
          'train_seconds': result['train_seconds'],
          'process_seconds': process_seconds}


def systems():
  """The systems this line has: tf.estimator only with
  tensorflow-estimator."""
  from hookestimator import compat  # pylint: disable=g-import-not-at-top
  return ['hookestimator'] + (['tf.estimator'] if compat.ESTIMATOR else [])


HEADER = ('| array MB | system | events MB | other MB | peak RSS MB | CPU s '
          '| train s | process s |')


def format_row(row):
  return '| %g | %s | %.2f | %.1f | %.0f | %.1f | %.2f | %.1f |' % (
      row['mb'], row['system'], row['events_mb'], row['other_mb'],
      row['peak_rss_mb'], row['cpu_seconds'], row['train_seconds'],
      row['process_seconds'])


def _child_result(command):
  out = subprocess.run(command, stdout=subprocess.PIPE, check=True).stdout
  line = [l for l in out.decode('utf-8', 'replace').splitlines()
          if l.startswith(RESULT_PREFIX)][-1]
  return json.loads(line[len(RESULT_PREFIX):])


def print_parts(sizes):
  """Runs one parts child per size; prints seconds per step and size."""
  root = tempfile.mkdtemp(prefix='big_constants_')
  try:
    columns = [_child_result([
        sys.executable, '-m', 'bench.big_constants', '--child', 'parts',
        '--mb', str(mb), '--model_dir', root])['parts'] for mb in sizes]
  finally:
    shutil.rmtree(root, ignore_errors=True)
  print('| seconds | ' + ' | '.join('%g MB' % mb for mb in sizes) + ' |')
  print('|---|' + '---:|' * len(sizes))
  for index, (label, _) in enumerate(columns[0]):
    print('| %s | %s |' % (label, ' | '.join(
        '%.2f' % column[index][1] for column in columns)))
  return 0


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--mb', type=float, nargs='+', default=[16, 128, 512],
                      help='array sizes in MiB')
  parser.add_argument('--steps', type=int, default=100)
  parser.add_argument('--profile', action='store_true',
                      help='print each run\'s cProfile of train()')
  parser.add_argument('--parts', action='store_true',
                      help='time each step that reads the array instead')
  parser.add_argument('--child', help=argparse.SUPPRESS)
  parser.add_argument('--model_dir', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.steps < 1 or any(mb <= 0 for mb in args.mb):
    parser.error('--steps and --mb must be positive')
  if args.child == 'parts':
    run_parts(args.mb[0], args.model_dir)
    return 0
  if args.child:
    run_child(args.child, args.mb[0], args.steps, args.model_dir,
              args.profile)
    return 0
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  print('TensorFlow %s, Python %s, %d steps, batch %d' % (
      tf.__version__, sys.version.split()[0], args.steps, BATCH_SIZE))
  if args.parts:
    return print_parts(args.mb)
  names = systems()
  if len(names) == 1:
    print('tf.estimator does not exist on this line (no '
          'tensorflow-estimator): hookestimator alone.')
  print(HEADER)
  print('|' + '---|' * 8)
  root = tempfile.mkdtemp(prefix='big_constants_')
  try:
    for mb in args.mb:
      for system in names:
        print(format_row(measure(system, mb, args.steps, root,
                                 profile=args.profile)))
        sys.stdout.flush()
  finally:
    shutil.rmtree(root, ignore_errors=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
