"""hookestimator against its peers, each in its own process, side by side.

Run from the repository root:

    python -m bench.peers                      # full run, about 10 minutes
    python -m bench.peers --quick              # smoke run, every row
    python -m bench.peers --workloads mlp,host_call --repeats 5
    python -m bench.peers --workloads replicas    # the replica rows alone
    python -m bench.peers --workloads evaluate,predict

What is compared
  Every system trains the same model on the same data with the same batch
  size and optimizer, in an OS process of its own (bench/peer_systems.py):

  - hookestimator at iterations_per_loop 1, 10, 100 and 1000;
  - tf.estimator.Estimator (tf.compat.v1.estimator), one step per
    session.run, on the lines that have tensorflow-estimator (TF 2.15 and
    older; later lines have no tf.estimator, so no Estimator rows,
    targets or chart lines, and the report says so);
  - Keras Model.fit at steps_per_execution 1 and 100 (TF 2 only: Keras 2
    on TF 2.15, Keras 3 from TF 2.16);
  - the limit: the same training step in one bare tf.compat.v1.while_loop
    over batches held as constants in the graph: no input pipeline, no
    hooks, no host round trips; one session.run per call;
  - the bare loop, 1 step per session.run ('bare1', mlp only, every
    line): the same step reading the workload's input_fn through an
    iterator's get_next in the graph, one session.run per step from a
    Python for loop; no hooks, no MonitoredSession.

  Workloads:

  - mlp: 64 inputs -> 256 relu -> 10 logits, batch 64, plain SGD lr 0.05,
    4096 fixed examples (bench/common.py). Every system.
  - gpt2-tiny: hookestimator.models.gpt2.gpt2() with the values of
    gin/runs/gpt2_tiny.gin (seq_len 128, 2 layers, d_model 128, 4 heads,
    Adam...), batch 32, its model_fn with the host_call dropped; the limit
    holds the first 16 batches of the training input. No Keras (the model
    is built from get_variable). Compute-bound: checks the framework adds
    ~nothing.
  - host_call: the mlp at iterations_per_loop 100 with a host_call of
    three scalars every step, against the same run without it (the mlp
    row); cost = 1 - rate with / rate without.
  - input-bound: the mlp fed by a pipeline whose host cost per batch is
    of the order of a step (1.2 to 2x the mlp step at ipl 100 on a 2-core
    machine; printed with the table): 18 rounds of x <- tanh(x @ M) on
    each batch in a sequential map, no prefetch. (A map per example costs
    ~20 us per example in tf.data alone, ~10x a step per batch, so the
    chain runs once per batch.) Systems: hookestimator ipl 100 and
    Estimator (where it exists), against "input alone" (a while_loop
    pulling batches from the same pipeline) and "compute alone" (the mlp
    limit). A framework
    that overlaps feeding with compute reaches min(input alone, compute
    alone); one that alternates them gets about 1 / (1/input + 1/compute).
  - replicas: the mlp and gpt2-tiny with RunConfig(num_replicas=N), N = 1
    and 2, on N CPU devices of this machine, at the workloads' own (global)
    batch: each replica trains on half of it at N = 2. hookestimator at
    ipl 100, the model's optimizer wrapped in CrossShardOptimizer (the
    identity at N = 1; gpt2-tiny's train step rebuilt from
    hookestimator.models.gpt2 to wrap it). The all-reduce's share of step
    time: a third row, the same 2 replicas whose gradients are not summed
    (plain optimizer; a cross-replica sum of a constant that nothing reads
    satisfies the framework's check and is pruned): share = 1 - rate
    summed / rate not summed, i.e. the extra time per step over the summed
    run's step time, the median over repeats of each repeat's share. It
    counts the sum (add_n on replica 0's device), the copies of the result
    to each replica and the wait for the slower replica at the sum. The
    three rows of a workload run in one child process ('replicas'), timed
    one after another in each repeat, in alternating order, so that the
    machine's drift hits the rows of one ratio alike.
  - evaluate, predict (bench/inference_systems.py): the mlp's model at
    batch 256 over 65,573 fixed examples (the last batch short),
    Dataset.from_tensor_slices(...).batch(256), no repeat: evaluate (mean
    loss and accuracy) and predict ({'logits'}, read example by example to
    the end). hookestimator ipl 100 (eval_metrics=(metric_fn, [labels,
    logits])), Estimator (eval_metric_ops) where it exists, and the bare
    loop ('bare'), which per call builds one graph, starts a session and
    restores the checkpoint, then evaluates in one session.run of a
    while_loop over the batches updating the same v1.metrics, or predicts
    with one session.run per batch, iterating the rows in Python.
  - memory: hookestimator ipl 100 with the 3-scalar host_call (in the
    ipl-100 child, after all throughput measurements): one warm-up train()
    call, then one call of --memory-steps steps sampling VmRSS, the OS
    thread count and threading.active_count() after every loop; growth =
    mean of the last 10% of samples against the first 10%.

  Periodic work is switched off as far as each system allows: checkpoints,
  summaries and step-count logging every 10**9 steps. Each system keeps
  its default session config and trains in a temporary model_dir.

How throughput is measured (the same for every system)
  Each system first runs one warm-up call. Then each repeat times
  (time.monotonic, in the child) two consecutive calls, of B steps and of
  B + S steps: train() calls; two model.fit(steps_per_epoch=n) calls on
  one compiled Keras model; two session.runs of the limit's loop with the
  step count fed. Fixed per-call costs (graph build, session start,
  restore, final checkpoint) cancel in the difference:

      steps/sec = S / (t(B + S steps) - t(B steps))

  S is a multiple of every loop size in the workload, and each system's B
  is at least its own loop size (mlp: B = 1,000, S = 10,000; gpt2-tiny:
  B = 10, or 100 at iterations_per_loop 100, S = 100; the replica rows:
  mlp S = 30,000, gpt2-tiny B = 100, S = 400), so all loops are full. Children start and warm up in parallel; then one measurement runs
  at a time, round-robin (repeat 1 of every system and workload, then
  repeat 2, ...), so slow drifts of a shared machine hit all alike.
  Reported: the median over repeats, and every repeat's value. --quick
  takes the same path with tiny step counts (loops not full) and one
  repeat; its numbers mean nothing.

  evaluate and predict time whole calls instead, fixed costs included:
  each system first trains one step (its checkpoint) and makes one
  warm-up call; each repeat then times one call, from the call to its
  return (predict: until its generator is exhausted), in the same
  round-robin; examples/sec = 65,573 / seconds (--quick too).

Ratios and targets
  A ratio is taken per repeat (repeat i of a system against repeat i of
  its peer, measured close in time) and reported as the median over
  repeats with its range, min to max. A target is met only if the whole
  range meets it (a minimum: the range's min; the host_call cost, a
  maximum: its max); a range across the target is "MISSED (spread
  crosses target)". The targets, each on the line being run, a peer this
  line lacks leaving its target out:

  - mlp and pipeline: hookestimator ipl 100 >= 0.9x the limit; pipeline
    >= 1.1x Keras spe 100;
  - 1 step per loop: hookestimator ipl 1 on the mlp >= 0.95x Estimator,
    or, without tf.estimator, the bare loop at 1 step per session.run;
  - gpt2-tiny: hookestimator ipl 100 >= 0.97x the limit;
  - replicas: N=2 examples/sec >= 0.95x N=1 (mlp, gpt2-tiny);
  - host_call: cost <= 10%; input-bound: >= 0.85x min(input alone,
    compute alone);
  - evaluate, predict: hookestimator ipl 100 >= 1.0x Estimator in
    examples/sec, or, without tf.estimator, the bare loop;
  - memory: RSS and OS thread growth < 5% (one run: no range).

  The targets are reported, never enforced: the exit status is non-zero
  only on an error (a child that fails, dies or does not answer in time,
  named with its stderr).
"""
from __future__ import absolute_import, division, print_function

import argparse
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import tensorflow as tf  # noqa: E402

from bench import peers_report  # noqa: E402
from bench.common import describe_machine, require_positive  # noqa: E402
from bench.inference_systems import INFERENCE_WORKLOADS  # noqa: E402
from bench.peer_systems import REPLICA_SYSTEMS, SYSTEMS  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKLOADS = ('mlp', 'pipeline', 'gpt2-tiny', 'replicas', 'host_call',
             'input-bound', 'evaluate', 'predict', 'memory')
# The workloads measured by systems of their own, in round-robin order.
MEASURED_ORDER = ('mlp', 'pipeline', 'host_call', 'input-bound', 'gpt2-tiny',
                  'evaluate', 'predict')
# The workloads with replica rows (--workloads replicas).
REPLICA_WORKLOADS = ('mlp', 'gpt2-tiny')

# (warm-up, base B, timed S) steps per measured workload: (full, --quick).
# In a full run a system's B is at least its loop size, so loops are full.
STEPS = {
    'mlp': ((1000, 1000, 10000), (100, 100, 1000)),
    'pipeline': ((1000, 1000, 10000), (100, 100, 1000)),
    'host_call': ((1000, 1000, 10000), (100, 100, 1000)),
    'input-bound': ((1000, 1000, 5000), (100, 100, 500)),
    'gpt2-tiny': ((20, 10, 100), (10, 10, 10)),
}
# The replica rows time longer calls: two gpt2-tiny replicas cost ~5 s per
# train() call to build and start, varying by seconds, against ~7 s per 100
# steps; and their ratios (N=2 / N=1, summed / not summed) need steadier
# rates than one row alone.
REPLICA_STEPS = {
    'mlp': ((1000, 1000, 30000), (100, 100, 1000)),
    'gpt2-tiny': ((20, 100, 400), (10, 10, 10)),
}
MEMORY_WARMUP_STEPS = (1000, 100)
DEFAULT_MEMORY_STEPS = 50000
QUICK_MEMORY_STEPS = 1000
MIN_MEMORY_STEPS = 20000
# Seconds any one answer from a child may take: (full, --quick).
TIMEOUTS = (900, 120)
# The children start (import TensorFlow) and warm up all at once: on a
# loaded 2-core machine those answers' deadlines grow with their count,
# by TIMEOUTS per this many children.
CHILDREN_PER_TIMEOUT = 4


class BenchError(Exception):
  """A child failed, died or did not answer in time."""


def measured_pairs(workloads):
  """The (workload, system) pairs to measure, in round-robin order:
  the workloads' own and those their figures depend on. Only systems this
  TensorFlow line has (peer_systems.SYSTEMS) take part."""
  systems = {
      'mlp': ['limit', 'bare1', 'estimator', 'keras1', 'keras100', 'hook1',
              'hook10', 'hook100', 'hook1000'],
      'pipeline': ['limit', 'estimator', 'keras100', 'hook100'],
      'host_call': ['hook100'],
      'input-bound': ['input-alone', 'hook100', 'estimator'],
      'gpt2-tiny': ['limit', 'estimator', 'hook1', 'hook10', 'hook100'],
      'evaluate': ['bare', 'estimator', 'hook100'],
      'predict': ['bare', 'estimator', 'hook100'],
  }
  needs = {'host_call': [('mlp', 'hook100')],
           'input-bound': [('mlp', 'limit')]}
  pairs = []
  for workload in MEASURED_ORDER:
    if workload in workloads:
      wanted = [(workload, s) for s in systems[workload] if s in SYSTEMS]
      for pair in needs.get(workload, []) + wanted:
        if pair not in pairs:
          pairs.append(pair)
  order = {w: i for i, w in enumerate(MEASURED_ORDER)}
  pairs = sorted(pairs, key=lambda pair: order[pair[0]])
  # Last, each workload's replica rows: one system serves them all.
  if 'replicas' in workloads:
    pairs += [(w, 'replicas') for w in REPLICA_WORKLOADS]
  return pairs


def report_pairs(pairs):
  """`pairs` with each (workload, 'replicas') as one pair per replica
  row."""
  expanded = []
  for workload, system in pairs:
    if system == 'replicas':
      expanded += [(workload, row) for row in REPLICA_SYSTEMS]
    else:
      expanded.append((workload, system))
  return expanded


class Child(object):
  """One child process serving one system; answers one JSON line per
  command. Every read has a deadline."""

  def __init__(self, system, root):
    self.system = system
    # The replica system trains and times 3 rows where others train one.
    self.timeout_scale = len(REPLICA_SYSTEMS) if system == 'replicas' else 1
    self._stderr = tempfile.TemporaryFile()
    self._buffer = b''
    self.process = subprocess.Popen(
        [sys.executable, '-m', 'bench.peer_systems', system,
         os.path.join(root, system)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
        cwd=REPO_ROOT, bufsize=0)

  def stderr_tail(self, size=4000):
    self._stderr.seek(0, os.SEEK_END)
    self._stderr.seek(max(0, self._stderr.tell() - size))
    return self._stderr.read().decode('utf-8', 'replace')

  def error(self, text):
    return BenchError('system %r: %s\n--- its stderr (tail) ---\n%s' % (
        self.system, text, self.stderr_tail()))

  def send(self, command):
    try:
      self.process.stdin.write((json.dumps(command) + '\n').encode('utf-8'))
      self.process.stdin.flush()
    except (IOError, OSError):
      raise self.error('died (exit status %s) before %s' % (
          self.process.poll(), command['cmd']))

  def receive(self, what, timeout):
    timeout *= self.timeout_scale
    deadline = time.monotonic() + timeout
    stdout = self.process.stdout
    while b'\n' not in self._buffer:
      remaining = deadline - time.monotonic()
      if remaining <= 0:
        self.kill()
        raise self.error('no answer to %s within %g s; killed' %
                         (what, timeout))
      ready, _, _ = select.select([stdout], [], [], remaining)
      if ready:
        chunk = os.read(stdout.fileno(), 1 << 16)
        if not chunk:
          try:
            status = self.process.wait(timeout=10)
          except subprocess.TimeoutExpired:
            status = 'unknown'
          raise self.error('exited (status %s) during %s' % (status, what))
        self._buffer += chunk
    line, self._buffer = self._buffer.split(b'\n', 1)
    try:
      answer = json.loads(line.decode('utf-8'))
    except ValueError:
      raise self.error('answered %r to %s' % (line[:200], what))
    if not answer.get('ok'):
      raise self.error('failed in %s:\n%s' % (what, answer.get('error')))
    return answer

  def request(self, command, what, timeout):
    self.send(command)
    return self.receive(what, timeout)

  def close(self, timeout=30):
    """Closes stdin (the child then exits); kills it if it lingers."""
    if self.process.poll() is None:
      try:
        self.process.stdin.close()
        self.process.wait(timeout=timeout)
      except (IOError, OSError, subprocess.TimeoutExpired):
        pass
    self.kill()
    self._stderr.close()

  def kill(self):
    if self.process.poll() is None:
      self.process.kill()
      self.process.wait()


def source_state():
  """Which hookestimator was measured: the git commit, and whether
  hookestimator/ differs from it (read-only git commands)."""
  def git(*argv):
    return subprocess.check_output(
        ('git',) + argv, cwd=REPO_ROOT, stderr=subprocess.DEVNULL,
        timeout=30).decode('utf-8', 'replace').strip()
  try:
    commit = git('rev-parse', '--short', 'HEAD')
    dirty = git('status', '--porcelain', '--', 'hookestimator')
  except (OSError, subprocess.SubprocessError):
    return 'hookestimator source: unknown (no git)'
  return 'hookestimator source: git %s%s' % (
      commit, ' + uncommitted changes in hookestimator/' if dirty else '')


def progress(text):
  print(text)
  sys.stdout.flush()


def steps_of(workload, system, quick):
  """(warm-up, B, S) of `system` on `workload` (evaluate and predict time
  whole calls: None)."""
  if workload in INFERENCE_WORKLOADS:
    return (None, None, None)
  table = REPLICA_STEPS if system == 'replicas' else STEPS
  return table[workload][1 if quick else 0]


def base_steps(workload, system, quick):
  """B for `system`: the workload's, raised to the system's loop size in a
  full run so that every loop is full."""
  base = steps_of(workload, system, quick)[1]
  loop = peers_report.loop_size(system)
  return base if quick or loop == '-' else max(base, int(loop))


def measure_call(child, workload, repeat, results, timeout):
  """One repeat of evaluate or predict on `child`: one timed call."""
  answer = child.request({'cmd': 'measure', 'workload': workload},
                         'measure %s' % workload, timeout)
  results.add(workload, child.system, answer)
  progress('repeat %d %-11s %-28s one call %6.2f s -> %s examples/sec' % (
      repeat + 1, workload, peers_report.row_name(child.system),
      answer['seconds'], peers_report.fmt(answer['rate'], '%.0f')))


def measure(child, workload, repeat, quick, results, timeout):
  """One repeat of `workload` on `child`: a call of B steps, then one of
  B + S steps (evaluate, predict: one timed call)."""
  if workload in INFERENCE_WORKLOADS:
    return measure_call(child, workload, repeat, results, timeout)
  base = base_steps(workload, child.system, quick)
  steps = steps_of(workload, child.system, quick)[2]
  answer = child.request({'cmd': 'measure', 'workload': workload,
                          'base': base, 'steps': steps},
                         'measure %s' % workload, timeout)
  rows = answer.get('rows', {child.system: answer})
  for system in (REPLICA_SYSTEMS if 'rows' in answer else rows):
    row = rows[system]
    results.add(workload, system, row)
    progress('repeat %d %-11s %-28s %5d steps %6.2f s, %5d steps %6.2f s -> '
             '%s steps/sec' % (
                 repeat + 1, workload, peers_report.row_name(system),
                 base, row['base_seconds'], base + steps,
                 row['long_seconds'], peers_report.fmt(row['rate'], '%.1f')))


def run(args):
  index = 1 if args.quick else 0
  timeout = TIMEOUTS[index]
  pairs = measured_pairs(args.workloads)
  systems = []
  for _, system in pairs:
    if system not in systems:
      systems.append(system)
  if 'memory' in args.workloads and 'hook100' not in systems:
    systems.append('hook100')
  results = peers_report.Results(args, report_pairs(pairs))
  machine = describe_machine() + [source_state()]
  for line in machine:
    progress(line)
  root = tempfile.mkdtemp(prefix='peers_')
  children = {}
  start = time.monotonic()
  # The deadline of the answers all children work on at once.
  together = timeout * max(1.0, len(systems) / float(CHILDREN_PER_TIMEOUT))
  try:
    for system in systems:
      children[system] = Child(system, root)
    for system in systems:
      children[system].receive('start-up', together)
    progress('%d child processes ready after %.1f s' % (
        len(children), time.monotonic() - start))
    warmups = {}
    for workload, system in pairs:
      warmups.setdefault(system, []).append(workload)
    for system, workloads in warmups.items():
      children[system].send({
          'cmd': 'warmup', 'workloads': workloads,
          'steps': {w: steps_of(w, system, args.quick)[0]
                    for w in workloads}})
    for system in warmups:
      answer = children[system].receive('warm-up', together)
      for workload, seconds in answer['seconds'].items():
        if not isinstance(seconds, dict):  # else the replica rows'
          seconds = {system: seconds}
        for row, row_seconds in seconds.items():
          results.warmup_seconds[workload, row] = row_seconds
    progress('warm-ups done after %.1f s (all children at once)' %
             (time.monotonic() - start))
    for repeat in range(args.repeats):
      for workload, system in pairs:
        measure(children[system], workload, repeat, args.quick, results,
                timeout)
    if 'memory' in args.workloads:
      answer = children['hook100'].request(
          {'cmd': 'memory', 'warmup': MEMORY_WARMUP_STEPS[index],
           'steps': args.memory_steps}, 'memory run', timeout)
      results.memory = answer
      progress('memory run: %d steps in %.1f s, %d samples' % (
          args.memory_steps, answer['seconds'], len(answer['samples'])))
  finally:
    for child in children.values():
      child.close()
    shutil.rmtree(root, ignore_errors=True)
  progress('all measured after %.1f s' % (time.monotonic() - start))
  lines = machine + [''] + results.report_lines()
  print()
  print('\n'.join(lines))
  md_path, png_path = peers_report.write_files(args.out, lines, results)
  print('\nWrote %s and %s' % (md_path, png_path))


def parse_args(argv=None):
  parser = argparse.ArgumentParser(
      prog='python -m bench.peers',
      description='hookestimator against tf.estimator.Estimator (where '
      'tensorflow-estimator is installed), Keras Model.fit (TF 2) and a bare '
      'while_loop, each in its own process.')
  parser.add_argument('--quick', action='store_true',
                      help='smoke run: every row, tiny step counts, 1 repeat')
  parser.add_argument('--repeats', type=int, default=None,
                      help='repeats per system; the median is reported '
                      '(default 3; 1 with --quick)')
  parser.add_argument('--workloads', default=','.join(WORKLOADS),
                      help='comma-separated subset of %s (default: all)' %
                      ','.join(WORKLOADS))
  parser.add_argument('--memory-steps', type=int, default=None,
                      help='steps of the sampled memory call (default %d, '
                      'at least %d, a multiple of 100; %d with --quick)' % (
                          DEFAULT_MEMORY_STEPS, MIN_MEMORY_STEPS,
                          QUICK_MEMORY_STEPS))
  parser.add_argument('--out', default=os.path.join(REPO_ROOT, 'bench',
                                                    'results'),
                      help='folder for peers-tfX.Y.md and .png (default '
                      'bench/results/)')
  args = parser.parse_args(argv)
  if args.repeats is None:
    args.repeats = 1 if args.quick else 3
  names = [w.strip() for w in args.workloads.split(',') if w.strip()]
  unknown = [w for w in names if w not in WORKLOADS]
  if unknown or not names:
    parser.error('--workloads: unknown %s; choose from %s' % (
        ', '.join(unknown) or 'nothing given', ', '.join(WORKLOADS)))
  args.workloads = [w for w in WORKLOADS if w in names]
  if args.memory_steps is None:
    args.memory_steps = (QUICK_MEMORY_STEPS if args.quick else
                         DEFAULT_MEMORY_STEPS)
  elif args.memory_steps < MIN_MEMORY_STEPS or args.memory_steps % 100:
    parser.error('--memory-steps must be a multiple of 100 of at least %d' %
                 MIN_MEMORY_STEPS)
  require_positive(parser, args, ('repeats',))
  return args


def main(argv=None):
  tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)
  args = parse_args(argv)
  try:
    run(args)
  except BenchError as e:
    sys.stdout.flush()
    print('bench.peers: error: %s' % e, file=sys.stderr)
    sys.exit(1)


if __name__ == '__main__':
  main()
