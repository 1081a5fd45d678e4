"""Training-loop speed: hookestimator vs tf.estimator.Estimator, side by side.

Run from the repository root:

    python -m bench.loop_speed              # full run, about 1-3 minutes
    python -m bench.loop_speed --quick      # a few-seconds smoke run
    python -m bench.loop_speed --steps 4000 --repeats 5

What is compared
  One model, one dataset, one batch size (64) and one optimizer (plain SGD)
  for every system: an MLP classifier (64 inputs -> 256 relu -> 10 logits)
  built from tf.compat.v1.get_variable and plain tf ops (resource variables
  on both TensorFlow lines), trained on 4096 random-but-fixed examples
  served by `Dataset.from_tensor_slices(...).repeat().batch(64,
  drop_remainder=True)`. The systems are:

  - tf.estimator.Estimator (tf.compat.v1.estimator), one step per
    session.run; the baseline of the ratio column;
  - hookestimator.HookEstimator at iterations_per_loop 1, 10 and 100.

  Periodic work is switched off as far as each system allows: checkpoints,
  summaries and step-count logging every 10**9 steps (both systems still
  write their final checkpoint, and do whatever they do unconditionally on
  every step or loop). Each system keeps its default session config. Each
  system trains in a fresh temporary model_dir of its own, which later
  train calls continue from.

How throughput is measured (the same for every system)
  Every train() call pays a fixed cost that does not depend on the number
  of steps: building the graph, creating the session and restoring the
  checkpoint, the first session.run, and at the end stopping threads and
  writing the final checkpoint. To exclude it, each repeat times
  (time.monotonic) two consecutive train() calls, a base call of B steps
  and a long call of B + S steps (S = --steps, B = --base-steps, a
  multiple of every iterations_per_loop so all loops are full). The fixed
  cost cancels in the difference, so

      steps/sec = S / (t(B + S steps) - t(B steps))

  is the marginal, steady-state speed of the training loop, including
  everything that happens per step or per loop (hooks, feeding threads,
  outfeed draining). The fixed cost per train() call is then estimated as
  t(B steps) - B / (steps/sec) and shown in a second table.

  Before timing, every system runs one warm-up train() call (--warmup-steps
  steps). Repeats are interleaved round-robin over the systems, so that slow
  drifts of the machine affect all systems alike; the reported value is the
  median over --repeats repeats. At the end each system's global step is
  checked against the number of steps it was asked to train.
"""
from __future__ import absolute_import, division, print_function

import argparse
import gc
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import hookestimator as he  # noqa: E402

v1 = tf.compat.v1

BATCH_SIZE = 64
NUM_EXAMPLES = 4096
NUM_INPUTS = 64
NUM_HIDDEN = 256
NUM_CLASSES = 10
LEARNING_RATE = 0.05
NEVER = 10 ** 9  # "every this many steps" that never comes in a benchmark
HOOK_ITERATIONS = (1, 10, 100)

DEFAULT_STEPS = 15000
DEFAULT_BASE_STEPS = 100
DEFAULT_WARMUP_STEPS = 500
QUICK_STEPS = 300
QUICK_BASE_STEPS = 100
QUICK_WARMUP_STEPS = 100


def make_data(seed=0):
  """Random inputs and labels from a random linear teacher (learnable)."""
  rng = np.random.RandomState(seed)
  features = rng.normal(size=(NUM_EXAMPLES, NUM_INPUTS)).astype(np.float32)
  teacher = rng.normal(size=(NUM_INPUTS, NUM_CLASSES)).astype(np.float32)
  labels = np.argmax(features.dot(teacher), axis=1).astype(np.int32)
  return features, labels


DATA = make_data()


def input_fn(params):
  batch_size = params['batch_size']
  dataset = tf.data.Dataset.from_tensor_slices(DATA)
  return dataset.repeat().batch(batch_size, drop_remainder=True)


def mlp_loss_and_train_op(features, labels):
  """The shared model: returns (loss, train_op)."""
  with v1.variable_scope('mlp', use_resource=True):
    w1 = v1.get_variable(
        'w1', [NUM_INPUTS, NUM_HIDDEN],
        initializer=v1.glorot_uniform_initializer(seed=1))
    b1 = v1.get_variable('b1', [NUM_HIDDEN],
                         initializer=v1.zeros_initializer())
    w2 = v1.get_variable(
        'w2', [NUM_HIDDEN, NUM_CLASSES],
        initializer=v1.glorot_uniform_initializer(seed=2))
    b2 = v1.get_variable('b2', [NUM_CLASSES],
                         initializer=v1.zeros_initializer())
  hidden = tf.nn.relu(tf.matmul(features, w1) + b1)
  logits = tf.matmul(hidden, w2) + b2
  loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=labels, logits=logits))
  train_op = v1.train.GradientDescentOptimizer(LEARNING_RATE).minimize(
      loss, global_step=v1.train.get_global_step())
  return loss, train_op


def hook_model_fn(features, labels, mode, params):
  loss, train_op = mlp_loss_and_train_op(features, labels)
  return he.HookEstimatorSpec(mode=mode, loss=loss, train_op=train_op)


def estimator_model_fn(features, labels, mode, params):
  loss, train_op = mlp_loss_and_train_op(features, labels)
  return v1.estimator.EstimatorSpec(mode=mode, loss=loss, train_op=train_op)


class System(object):
  """One trainer under test, in a model_dir of its own."""

  def __init__(self, name, iterations_per_loop, estimator, input_fn=input_fn):
    self.name = name
    self.iterations_per_loop = iterations_per_loop
    self.estimator = estimator
    self.input_fn = input_fn
    self.steps_trained = 0
    self.warmup_seconds = None
    self.rates = []
    self.fixed_costs = []

  def train(self, steps):
    """Trains `steps` steps; returns the wall time of the train() call."""
    gc.collect()
    start = time.monotonic()
    self.estimator.train(self.input_fn, steps=steps)
    seconds = time.monotonic() - start
    self.steps_trained += steps
    return seconds

  def marginal_rate(self, base_steps, steps):
    """Steps/sec of `steps` more steps: a call of base_steps and one of
    base_steps + steps, so fixed per-call costs cancel. Appends the rate to
    `rates`; returns (rate, base call seconds, long call seconds)."""
    base = self.train(base_steps)
    long_call = self.train(base_steps + steps)
    delta = long_call - base
    rate = steps / delta if delta > 0 else float('nan')
    self.rates.append(rate)
    return rate, base, long_call

  def global_step(self):
    return int(self.estimator.get_variable_value(v1.GraphKeys.GLOBAL_STEP))


def make_systems(root):
  systems = []
  model_dir = os.path.join(root, 'estimator')
  config = v1.estimator.RunConfig(
      model_dir=model_dir, save_checkpoints_steps=NEVER,
      save_summary_steps=NEVER, log_step_count_steps=NEVER)
  systems.append(System(
      'tf.estimator.Estimator', 1,
      v1.estimator.Estimator(estimator_model_fn, config=config,
                             params={'batch_size': BATCH_SIZE})))
  for iterations in HOOK_ITERATIONS:
    config = he.RunConfig(
        model_dir=os.path.join(root, 'hookestimator_ipl%d' % iterations),
        iterations_per_loop=iterations, save_checkpoints_steps=NEVER,
        log_step_count_steps=NEVER)
    systems.append(System(
        'hookestimator', iterations,
        he.HookEstimator(hook_model_fn, config=config,
                         train_batch_size=BATCH_SIZE)))
  return systems


def _package_version(name):
  try:
    import pkg_resources  # pylint: disable=g-import-not-at-top
    return pkg_resources.get_distribution(name).version
  except Exception:  # pylint: disable=broad-except
    return 'unknown'


def _cpu_model():
  try:
    with open('/proc/cpuinfo') as cpuinfo:
      for line in cpuinfo:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except (IOError, OSError):
    pass
  return platform.processor() or 'unknown'


def describe_machine():
  usable = (len(os.sched_getaffinity(0))
            if hasattr(os, 'sched_getaffinity') else os.cpu_count())
  return [
      'TensorFlow %s (tensorflow-estimator %s), Python %s' % (
          tf.__version__, _package_version('tensorflow-estimator'),
          platform.python_version()),
      'Machine: %s; CPU: %s; CPU count: %s (usable: %s)' % (
          platform.platform(), _cpu_model(), os.cpu_count(), usable),
  ]


def _fmt(value, pattern):
  return 'n/a' if value is None or value != value else pattern % value


def median(values):
  """The median of the values that are numbers (NaN where none is)."""
  values = [v for v in values if v == v]
  return statistics.median(values) if values else float('nan')


def print_tables(systems, args):
  baseline = median(systems[0].rates)
  print()
  print('Training-loop throughput, batch %d, median of %d repeat(s) of '
        '%d steps (marginal speed: fixed per-call cost excluded)' %
        (BATCH_SIZE, args.repeats, args.steps))
  print()
  print('| system | iterations_per_loop | steps/sec | examples/sec | '
        'ratio to tf.estimator.Estimator |')
  print('|---|---:|---:|---:|---:|')
  for system in systems:
    rate = median(system.rates)
    print('| %s | %d | %s | %s | %s |' % (
        system.name, system.iterations_per_loop, _fmt(rate, '%.1f'),
        _fmt(rate * BATCH_SIZE, '%.0f'),
        _fmt(rate / baseline if baseline else float('nan'), '%.2fx')))
  print()
  print('Per-repeat steps/sec and per-call fixed cost (graph build, session '
        'start, restore, first run, final checkpoint):')
  print()
  print('| system | iterations_per_loop | steps/sec per repeat | '
        'fixed cost per train() call, s (median) | warm-up call, s |')
  print('|---|---:|---|---:|---:|')
  for system in systems:
    print('| %s | %d | %s | %s | %s |' % (
        system.name, system.iterations_per_loop,
        ', '.join(_fmt(r, '%.1f') for r in system.rates),
        _fmt(median(system.fixed_costs), '%.2f'),
        _fmt(system.warmup_seconds, '%.2f')))


def run(args):
  for line in describe_machine():
    print(line)
  print('Model: MLP %d-%d-%d, SGD lr %g, batch %d, %d in-memory examples' %
        (NUM_INPUTS, NUM_HIDDEN, NUM_CLASSES, LEARNING_RATE, BATCH_SIZE,
         NUM_EXAMPLES))
  print('Steps: warm-up %d, then per repeat a base call of %d and a long '
        'call of %d; %d repeat(s)' % (args.warmup_steps, args.base_steps,
                                      args.base_steps + args.steps,
                                      args.repeats))
  sys.stdout.flush()
  root = tempfile.mkdtemp(prefix='loop_speed_')
  try:
    systems = make_systems(root)
    for system in systems:
      system.warmup_seconds = system.train(args.warmup_steps)
      print('warm-up  %-24s ipl %3d: %.2f s' % (
          system.name, system.iterations_per_loop, system.warmup_seconds))
      sys.stdout.flush()
    for repeat in range(args.repeats):
      for system in systems:
        rate, base, long_call = system.marginal_rate(args.base_steps,
                                                     args.steps)
        system.fixed_costs.append(
            base - args.base_steps / rate if rate == rate else float('nan'))
        print('repeat %d %-24s ipl %3d: %d steps in %.2f s, %d steps in '
              '%.2f s -> %s steps/sec' % (
                  repeat + 1, system.name, system.iterations_per_loop,
                  args.base_steps, base, args.base_steps + args.steps,
                  long_call, _fmt(rate, '%.1f')))
        sys.stdout.flush()
    for system in systems:
      step = system.global_step()
      if step != system.steps_trained:
        print('WARNING: %s ipl %d ended at global step %d, expected %d' % (
            system.name, system.iterations_per_loop, step,
            system.steps_trained))
    print_tables(systems, args)
  finally:
    v1.summary.FileWriterCache.clear()
    if args.keep:
      print('\nModel dirs kept under %s' % root)
    else:
      shutil.rmtree(root, ignore_errors=True)


def parse_args(argv=None):
  parser = argparse.ArgumentParser(
      prog='python -m bench.loop_speed',
      description='Training-loop throughput of hookestimator vs '
      'tf.estimator.Estimator on one small MLP.')
  parser.add_argument('--steps', type=int, default=None,
                      help='timed steps per repeat (default %d; %d with '
                      '--quick)' % (DEFAULT_STEPS, QUICK_STEPS))
  parser.add_argument('--repeats', type=int, default=None,
                      help='repeats per system; the median is reported '
                      '(default 3; 1 with --quick)')
  parser.add_argument('--base-steps', type=int, default=None,
                      help='steps of the base call subtracted in each repeat '
                      '(default %d)' % DEFAULT_BASE_STEPS)
  parser.add_argument('--warmup-steps', type=int, default=None,
                      help='steps of the warm-up call (default %d; %d with '
                      '--quick)' % (DEFAULT_WARMUP_STEPS, QUICK_WARMUP_STEPS))
  parser.add_argument('--quick', action='store_true',
                      help='a few-seconds smoke run')
  parser.add_argument('--keep', action='store_true',
                      help='keep the temporary model dirs')
  args = parser.parse_args(argv)
  if args.steps is None:
    args.steps = QUICK_STEPS if args.quick else DEFAULT_STEPS
  if args.repeats is None:
    args.repeats = 1 if args.quick else 3
  if args.base_steps is None:
    args.base_steps = QUICK_BASE_STEPS if args.quick else DEFAULT_BASE_STEPS
  if args.warmup_steps is None:
    args.warmup_steps = (QUICK_WARMUP_STEPS if args.quick else
                         DEFAULT_WARMUP_STEPS)
  require_positive(parser, args, ('steps', 'repeats', 'base_steps',
                                   'warmup_steps'))
  return args


def require_positive(parser, args, names):
  """Exits through parser.error naming the first of `names` that is not
  positive."""
  for name in names:
    if getattr(args, name) <= 0:
      parser.error('--%s must be positive' % name.replace('_', '-'))


def main(argv=None):
  v1.logging.set_verbosity(v1.logging.ERROR)
  run(parse_args(argv))


if __name__ == '__main__':
  main()
