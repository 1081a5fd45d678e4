"""Soak: a long training with host_call and checkpoints; thread count and
resident memory must stay flat.

Run from the repository root:

    python -m bench.soak                 # 50,000 steps in one train() call
    python -m bench.soak --calls 10      # the same steps over 10 train() calls
    python -m bench.soak --calls 200 --steps 20000   # many short calls
    python -m bench.soak --check         # exit 1 unless flat

A small MLP (16-64-2) trains at iterations_per_loop 100 with a host_call
returning two scalars every step (written to TensorBoard), and an
asynchronous checkpoint, with the input position, every 1,000 steps.
Every --sample-steps steps a hook records the process's resident memory
(VmRSS), its OS thread count and its Python thread count. Memory is
judged after a warm-up (the first --warmup-steps steps: TensorFlow's
allocators, caches and thread pools fill up); flat means it grew by less
than --max-growth-mb from the end of the warm-up to the end, and the
thread counts after the warm-up never changed.

Over several calls, the process is also sampled after every call returns:
no thread may outlive a call (the Python threads are back to the count
before the first call), the OS threads after the warm-up stay within one
of each other (a thread joined as the call returned may still be leaving),
and the resident memory after the calls must not trend up: the
least-squares line through the calls after the warm-up grows by less than
--max-growth-mb over them. (A line, not the last sample less the first:
each call leaves its graph to Python's garbage collector, which frees it
some calls later, so memory between calls rises and falls by some MB.)
"""
from __future__ import absolute_import, division, print_function

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import hookestimator as he  # noqa: E402
from bench.common import describe_machine  # noqa: E402

v1 = tf.compat.v1
BATCH_SIZE = 32


def input_fn(params):
  rng = np.random.RandomState(0)
  x = rng.normal(size=(2048, 16)).astype(np.float32)
  y = (x.sum(axis=1) > 0).astype(np.int64)
  dataset = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(2048, seed=1)
  return dataset.repeat().batch(params['batch_size'], drop_remainder=True)


def model_fn(features, labels, mode, params):
  hidden = tf.nn.relu(tf.matmul(features, v1.get_variable('w1', [16, 64])))
  logits = tf.matmul(hidden, v1.get_variable('w2', [64, 2]))
  loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=labels, logits=logits))
  accuracy = tf.reduce_mean(tf.cast(
      tf.equal(tf.argmax(logits, 1), labels), tf.float32))
  train_op = v1.train.GradientDescentOptimizer(0.05).minimize(
      loss, global_step=v1.train.get_global_step())

  def host_call(loss, accuracy):
    return {'host_loss': loss[0], 'accuracy': accuracy[0]}
  return he.HookEstimatorSpec(
      mode=mode, loss=loss, train_op=train_op,
      host_call=(host_call, [tf.reshape(loss, [1]),
                             tf.reshape(accuracy, [1])]))


def _status(field):
  with open('/proc/self/status') as status:
    for line in status:
      if line.startswith(field + ':'):
        return int(line.split()[1])
  return -1


def sample(step, start):
  return {'step': step, 'seconds': time.monotonic() - start,
          'rss_mb': _status('VmRSS') / 1024.0,
          'os_threads': _status('Threads'),
          'python_threads': threading.active_count()}


class Sampler(v1.train.SessionRunHook):
  """Records a sample every `every` steps (shifted by `offset`, away from
  the checkpoints), at loop boundaries."""

  def __init__(self, every, offset, samples, start):
    self._every = every
    self._offset = offset
    self._samples = samples
    self._start = start
    self._next = None

  def after_create_session(self, session, coord):
    step = int(session.run(v1.train.get_global_step()))
    self._next = step // self._every * self._every + self._offset
    if self._next <= step:
      self._next += self._every

  def after_run(self, run_context, run_values):
    step = int(run_context.session.run(v1.train.get_global_step()))
    if step >= self._next:
      self._samples.append(sample(step, self._start))
      self._next += self._every


def run(args):
  for line in describe_machine():
    print(line)
  print('Soak: %d steps in %d train() call(s), iterations_per_loop %d, '
        'host_call every step, a checkpoint every %d steps' % (
            args.steps, args.calls, args.iterations_per_loop,
            args.save_steps))
  sys.stdout.flush()
  model_dir = tempfile.mkdtemp(prefix='soak_')
  samples = []
  after_calls = []
  start = time.monotonic()
  try:
    config = he.RunConfig(model_dir=model_dir,
                          iterations_per_loop=args.iterations_per_loop,
                          save_checkpoints_steps=args.save_steps,
                          log_step_count_steps=10 ** 9)
    est = he.HookEstimator(model_fn, config=config,
                           train_batch_size=BATCH_SIZE)
    samples.append(sample(0, start))
    per_call = args.steps // args.calls
    for _ in range(args.calls):
      est.train(input_fn, steps=per_call,
                hooks=[Sampler(args.sample_steps, args.save_steps // 2,
                               samples, start)])
      if args.calls > 1:
        after_calls.append(sample(est.checkpoint_step(), start))
    final = sample(int(est.get_variable_value('global_step')), start)
    final['step'] = '%d (after train)' % final['step']
    samples.append(final)
  finally:
    v1.summary.FileWriterCache.clear()
    shutil.rmtree(model_dir, ignore_errors=True)
  flat = report(samples, args)
  if after_calls:
    flat = report_calls(samples[0], after_calls, args) and flat
  return flat


def report(samples, args):
  print()
  print('| step | seconds | RSS, MB | OS threads | Python threads |')
  print('|---:|---:|---:|---:|---:|')
  for s in samples:
    print('| %s | %.1f | %.1f | %d | %d |' % (
        s['step'], s['seconds'], s['rss_mb'], s['os_threads'],
        s['python_threads']))
  during = [s for s in samples[1:-1] if s['step'] >= args.warmup_steps]
  if len(during) < 2:
    print('\nToo few samples after the warm-up to judge.')
    return False
  growth = during[-1]['rss_mb'] - during[0]['rss_mb']
  span = during[-1]['step'] - during[0]['step']
  os_threads = sorted({s['os_threads'] for s in during})
  python_threads = sorted({s['python_threads'] for s in during})
  print()
  print('After the warm-up (steps %d to %d): RSS %.1f -> %.1f MB (%+.1f MB, '
        '%+.2f MB per 10,000 steps); OS threads %s; Python threads %s; '
        '%.0f steps/sec overall' % (
            during[0]['step'], during[-1]['step'], during[0]['rss_mb'],
            during[-1]['rss_mb'], growth, growth / span * 10000, os_threads,
            python_threads, args.steps / samples[-1]['seconds']))
  flat = (growth < args.max_growth_mb and len(os_threads) == 1 and
          len(python_threads) == 1)
  print('FLAT' if flat else 'NOT FLAT')
  return flat


def report_calls(before, after_calls, args):
  """Judges the samples taken as each call returned; returns whether flat."""
  print()
  stride = _stride(after_calls)
  print('After each call%s:' % (' (every %dth shown)' % stride
                                if stride > 1 else ''))
  print()
  print('| call | step | RSS, MB | OS threads | Python threads |')
  print('|---:|---:|---:|---:|---:|')
  shown = list(range(0, len(after_calls), stride))
  if shown[-1] != len(after_calls) - 1:
    shown.append(len(after_calls) - 1)
  for index in shown:
    s = after_calls[index]
    print('| %d | %d | %.1f | %d | %d |' % (
        index + 1, s['step'], s['rss_mb'], s['os_threads'],
        s['python_threads']))
  during = [s for s in after_calls if s['step'] >= args.warmup_steps]
  if len(during) < 3:
    print('\nToo few calls after the warm-up to judge.')
    return False
  calls = np.arange(len(during))
  per_call = np.polyfit(calls, [s['rss_mb'] for s in during], 1)[0]
  trend = per_call * (len(during) - 1)
  left = sorted({s['python_threads'] for s in after_calls})
  os_threads = sorted({s['os_threads'] for s in during})
  steps_per_call = args.steps // args.calls
  print()
  print('Between calls, after the warm-up (%d calls): RSS trend %+.1f MB '
        '(%+.3f MB per call, %+.2f MB per 10,000 steps); OS threads %s; '
        'Python threads after every call %s, %d before the first' % (
            len(during), trend, per_call, per_call / steps_per_call * 10000,
            os_threads, left, before['python_threads']))
  flat = (trend < args.max_growth_mb and
          os_threads[-1] - os_threads[0] <= 1 and
          left == [before['python_threads']])
  print('FLAT between calls' if flat else 'NOT FLAT between calls')
  return flat


def _stride(items):
  return max(1, len(items) // 20)


def parse_args(argv=None):
  parser = argparse.ArgumentParser(prog='python -m bench.soak',
                                   description=__doc__.split('\n')[0])
  parser.add_argument('--steps', type=int, default=50000)
  parser.add_argument('--calls', type=int, default=1,
                      help='train() calls the steps are split over')
  parser.add_argument('--iterations-per-loop', type=int, default=100)
  parser.add_argument('--save-steps', type=int, default=1000)
  parser.add_argument('--sample-steps', type=int, default=5000)
  parser.add_argument('--warmup-steps', type=int, default=10000)
  parser.add_argument('--max-growth-mb', type=float, default=20.0)
  parser.add_argument('--check', action='store_true',
                      help='exit with status 1 unless flat')
  args = parser.parse_args(argv)
  if args.steps % args.calls:
    parser.error('--steps must be a multiple of --calls')
  return args


def main(argv=None):
  v1.logging.set_verbosity(v1.logging.ERROR)
  args = parse_args(argv)
  flat = run(args)
  if args.check and not flat:
    sys.exit(1)


if __name__ == '__main__':
  main()
