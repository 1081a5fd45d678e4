"""Checkpoint stall: training throughput while saving ~100 MB every loop.

Run from the repository root:

    python -m bench.checkpoint_stall            # full run, a few minutes
    python -m bench.checkpoint_stall --quick    # a smoke run

The model holds about 100 MB of variables: an embedding table of
200,000 x 128 float32 (102 MB), read by a gather of each batch's 64 ids,
with a sparse SGD update, and a small dense head. Steps are cheap, so
checkpoint cost is what the figures show. Every system trains the same
model on the same data, saving every --interval steps (hookestimator:
iterations_per_loop = --interval, so one checkpoint per loop), or never:

  - tf.estimator.Estimator, never / every --interval steps (its
    CheckpointSaverHook writes on the training thread), on the lines that
    have tensorflow-estimator (TF 2.15 and older; later lines have no
    tf.estimator, and the table says so);
  - hookestimator, never / every loop, written asynchronously (the
    default: a snapshot at the loop boundary, written by a thread of its
    own, at most one write in flight);
  - hookestimator, every loop, written synchronously (a model that brings
    its own saver through scaffold_fn), to show what the snapshot buys.

Throughput is marginal, as in bench.peers: each repeat times a call
of B steps and one of B + S steps, steps/sec = S / (t(B+S) - t(B)), so
graph building, session start, the 100 MB restore and the final
checkpoint cancel out. The stall per checkpoint is the time a checkpoint
adds to the training loop: (1/rate_saving - 1/rate_never) * interval.
"""
from __future__ import absolute_import, division, print_function

import argparse
import os
import shutil
import sys
import tempfile

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import hookestimator as he  # noqa: E402
from bench import common  # noqa: E402
from bench.common import describe_machine, median  # noqa: E402
from hookestimator import compat  # noqa: E402

v1 = tf.compat.v1

VOCABULARY = 200000
EMBEDDING = 128
BATCH_SIZE = 64
NEVER = 10 ** 9
KEEP = 2  # checkpoints kept: bounds the disk used


def input_fn(params):
  rng = np.random.RandomState(0)
  ids = rng.randint(0, VOCABULARY, size=(4096, 1)).astype(np.int64)
  labels = (ids[:, 0] % 2).astype(np.int64)
  dataset = tf.data.Dataset.from_tensor_slices((ids, labels))
  return dataset.repeat().batch(params['batch_size'], drop_remainder=True)


def loss_and_train_op(features, labels):
  with v1.variable_scope('model', use_resource=True):
    table = v1.get_variable(
        'embedding', [VOCABULARY, EMBEDDING],
        initializer=v1.random_normal_initializer(stddev=0.01, seed=1))
    head = v1.get_variable('head', [EMBEDDING, 2],
                           initializer=v1.glorot_uniform_initializer(seed=2))
  vectors = tf.gather(table, features[:, 0])
  logits = tf.matmul(vectors, head)
  loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=labels, logits=logits))
  train_op = v1.train.GradientDescentOptimizer(0.1).minimize(
      loss, global_step=v1.train.get_global_step())
  return loss, train_op


def hook_model_fn(features, labels, mode, params):
  loss, train_op = loss_and_train_op(features, labels)
  scaffold_fn = None
  if params.get('own_saver'):
    scaffold_fn = lambda: v1.train.Scaffold(saver=v1.train.Saver(  # noqa: E731
        max_to_keep=KEEP, sharded=True, save_relative_paths=True))
  return he.HookEstimatorSpec(mode=mode, loss=loss, train_op=train_op,
                              scaffold_fn=scaffold_fn)


def estimator_model_fn(features, labels, mode, params):
  loss, train_op = loss_and_train_op(features, labels)
  return compat.ESTIMATOR.EstimatorSpec(mode=mode, loss=loss,
                                        train_op=train_op)


class System(common.System):
  """A trainer under test, saving as `saving` says."""

  def __init__(self, name, saving, estimator, iterations_per_loop):
    super(System, self).__init__(name, iterations_per_loop, estimator,
                                 input_fn)
    self.saving = saving


def make_systems(root, interval):
  systems = []
  estimator_savings = ((('never', NEVER), ('every %d steps' % interval,
                                           interval))
                       if common.HAS_ESTIMATOR else ())
  for saving, every in estimator_savings:
    config = compat.ESTIMATOR.RunConfig(
        model_dir=os.path.join(root, 'estimator_%d' % every),
        save_checkpoints_steps=every, keep_checkpoint_max=KEEP,
        save_summary_steps=NEVER, log_step_count_steps=NEVER)
    systems.append(System('tf.estimator.Estimator', saving,
                          compat.ESTIMATOR.Estimator(
                              estimator_model_fn, config=config,
                              params={'batch_size': BATCH_SIZE}), 1))
  for saving, every, params in (
      ('never', NEVER, {}),
      ('every loop, async (default)', interval, {}),
      ('every loop, sync (own saver)', interval, {'own_saver': True})):
    config = he.RunConfig(
        model_dir=os.path.join(root, 'hook_%s_%d' % (bool(params), every)),
        iterations_per_loop=interval, save_checkpoints_steps=every,
        keep_checkpoint_max=KEEP, log_step_count_steps=NEVER)
    systems.append(System('hookestimator', saving, he.HookEstimator(
        hook_model_fn, config=config, params=params,
        train_batch_size=BATCH_SIZE), interval))
  return systems


def print_table(systems, args):
  never = {}
  for system in systems:
    if system.saving == 'never':
      never[system.name] = median(system.rates)
  # The last column compares with Estimator never saving, where it exists.
  baseline = never.get('tf.estimator.Estimator')
  print()
  print('Checkpoint stall: ~%d MB of variables, checkpoint every %d steps; '
        'median of %d repeat(s) of %d steps' % (
            VOCABULARY * EMBEDDING * 4 // 10 ** 6, args.interval,
            args.repeats, args.steps))
  if baseline is None:
    print()
    print(common.no_estimator_note('rows'))
  print()
  header = ['system', 'checkpoints', 'steps/sec',
            'vs. same system never saving', 'stall per checkpoint, ms']
  if baseline is not None:
    header.append('ratio to Estimator never saving')
  print('| %s |' % ' | '.join(header))
  print('|---|---|%s|' % '|'.join(['---:'] * (len(header) - 2)))
  for system in systems:
    rate = median(system.rates)
    own = never[system.name]
    stall = ((1.0 / rate - 1.0 / own) * args.interval * 1000
             if system.saving != 'never' else 0.0)
    row = [system.name, system.saving, common.fmt(rate, '%.0f'),
           common.fmt(rate / own, '%.2fx'),
           '-' if system.saving == 'never' else common.fmt(stall, '%.0f')]
    if baseline is not None:
      row.append(common.fmt(rate / baseline, '%.2fx'))
    print('| %s |' % ' | '.join(row))


def run(args):
  for line in describe_machine():
    print(line)
  sys.stdout.flush()
  root = tempfile.mkdtemp(prefix='checkpoint_stall_')
  try:
    systems = make_systems(root, args.interval)
    for system in systems:
      seconds = system.train(args.interval)
      print('warm-up  %-24s %-30s %.2f s' % (system.name, system.saving,
                                             seconds))
      sys.stdout.flush()
    for repeat in range(args.repeats):
      for system in systems:
        rate, base, long_call = system.marginal_rate(args.base_steps,
                                                     args.steps)
        print('repeat %d %-24s %-30s %.2f s, %.2f s -> %.0f steps/sec' % (
            repeat + 1, system.name, system.saving, base, long_call, rate))
        sys.stdout.flush()
    print_table(systems, args)
  finally:
    v1.summary.FileWriterCache.clear()
    shutil.rmtree(root, ignore_errors=True)


def parse_args(argv=None):
  parser = argparse.ArgumentParser(
      prog='python -m bench.checkpoint_stall',
      description='Throughput while checkpointing ~100 MB every loop.')
  parser.add_argument('--interval', type=int, default=1000,
                      help='steps between checkpoints, and hookestimator\'s '
                      'iterations_per_loop (default 1000)')
  parser.add_argument('--steps', type=int, default=None,
                      help='timed steps per repeat (default 20000; 2000 with '
                      '--quick)')
  parser.add_argument('--base-steps', type=int, default=None,
                      help='steps of the base call (default: --interval)')
  parser.add_argument('--repeats', type=int, default=None,
                      help='repeats (default 3; 1 with --quick)')
  parser.add_argument('--quick', action='store_true')
  args = parser.parse_args(argv)
  if args.steps is None:
    args.steps = 2000 if args.quick else 20000
  if args.repeats is None:
    args.repeats = 1 if args.quick else 3
  if args.base_steps is None:
    args.base_steps = args.interval
  common.require_positive(parser, args,
                          ('interval', 'steps', 'base_steps', 'repeats'))
  if args.steps % args.interval or args.base_steps % args.interval:
    parser.error('--steps and --base-steps must be multiples of --interval')
  return args


def main(argv=None):
  v1.logging.set_verbosity(v1.logging.ERROR)
  run(parse_args(argv))


if __name__ == '__main__':
  main()
