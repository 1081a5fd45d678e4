"""Scale: the startup and step cost of N replicas in one process, and of
a cluster of W loopback worker processes.

Run from the repository root:

    python -m bench.scale              # MLP N = 1, 8, 32, 128; gpt2 tiny 1, 8, 32;
                                       # then MLP on W = 1, 2, 4 workers
    python -m bench.scale --quick      # MLP N = 1, 2 and gpt2 tiny N = 1, 2; W = 1, 2
    python -m bench.scale --models gpt2 --replicas 1 8 --no_workers
    python -m bench.scale --models mlp --replicas 1 --loops 2 --workers 1 2 4

Each row trains a fresh `HookEstimator` with `RunConfig(num_replicas=N)`
on N CPU devices in this process, with a fixed batch per replica (the
global batch grows with N: weak scaling, so a replica's work stays the
same). The models are the bundled ones, as gin/runs configures them:

  - mlp: hookestimator.models.digits_mlp (64 -> 128 ReLU -> 10, Adam),
    16 examples per replica;
  - gpt2: hookestimator.models.gpt2 tiny (2 layers, d_model 128, 4 heads,
    seq_len 128, Adam, gradient clipping), 4 sequences per replica.

One train() call of `loops` loops of `ipl` steps each; a hook of its own
timestamps the call's phases, measured from the start of train():

  - graph built: the hook's begin(), once the training graph is complete;
  - session created: after_create_session() (variables initialised and
    the replicas' copies synced);
  - first loop: the end of the first session.run of the device loop (it
    includes TensorFlow's first-run graph optimisation);
  - steady step: the median over the later loops of a loop's wall time
    over its steps;
  - first step: first loop - (ipl - 1) x steady step, the time to the end
    of the first step.

Per replica = (first step at N - first step at 1) / (N - 1). The graph's
node count is that of the training graph. CPU seconds are this process's
user + system time from the start of train(), but the graph's build CPU
counts from input_fn's call (the build's first user code) to the graph
being built: on a cluster the chief first waits for every task, and its
probes are no part of the build.

Loopback workers (skipped with --no_workers): for each W of --workers
(default 1, 2, 4; 1, 2 with --quick) a cluster of W processes, the chief
and W - 1 workers, each with TF_CONFIG naming its task on free 127.0.0.1
ports, 1 replica each, training --workers_model (mlp, as its row above, or
gpt2) for --loops loops at the same batch per replica (the global batch
grows with W). W = 1 is the chief alone, in a process of its own. The
processes are started as bench.cluster starts its own (its launch(),
tf_config() and kill_group()), each in a process group of its own, all
killed when the cluster ends, passes or fails, or LOOPBACK_SECS pass. The
chief measures its own train() call with the phase hook above and prints
its row as one line; the table gives, per W, the chief's training-graph
node count, its CPU seconds (user + system) up to the graph being built,
and the wall time from the start of train() to the end of the first step
(which includes waiting for the workers' servers). Then the ratios W=4 /
W=1 of the nodes and build CPU, against the target of at most 1.2x: "met"
or "missed" (at a largest W other than 4 the ratio is printed, not
judged). Every process shares this machine's cores.
"""
from __future__ import absolute_import, division, print_function

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import tensorflow as tf  # noqa: E402

import hookestimator as he  # noqa: E402
from hookestimator import cluster as cluster_lib  # noqa: E402
from bench.common import describe_machine  # noqa: E402
from hookestimator.models import digits_mlp  # noqa: E402
from hookestimator.models import gpt2  # noqa: E402

v1 = tf.compat.v1

# model: (factory, examples per replica, steps per loop)
MODELS = {
    'mlp': (lambda: digits_mlp.digits_mlp(seed=0), 16, 20),
    'gpt2': (gpt2.gpt2, 4, 2),
}
REPLICAS = {'mlp': (1, 8, 32, 128), 'gpt2': (1, 8, 32)}
QUICK_REPLICAS = (1, 2)
NEVER = 10 ** 9


def process_cpu():
  """This process's CPU seconds so far, all threads, user + system."""
  return sum(os.times()[:2])


class PhaseHook(v1.train.SessionRunHook):
  """Timestamps of a train() call's phases, from `start`."""

  def __init__(self, start, cpu_start):
    self._start = start
    self._cpu_start = cpu_start
    self.session_cpu = None
    self.loop_end_cpus = []
    self.graph_built = None
    self.build_cpu = None
    self._build_start_cpu = None
    self.nodes = None
    self.session_created = None
    self.loop_ends = []

  def _now(self):
    return time.monotonic() - self._start

  def _cpu(self):
    return process_cpu() - self._cpu_start

  def input_fn_called(self):
    """Marks the start of the graph's build: train() calls input_fn
    first (on a cluster after the start-up's wait for every task, whose
    probes are no part of the build)."""
    if self._build_start_cpu is None:
      self._build_start_cpu = process_cpu()

  def begin(self):
    self.graph_built = self._now()
    # The CPU the graph's build took, from input_fn's call.
    self.build_cpu = process_cpu() - (self._build_start_cpu or
                                      self._cpu_start)
    self.nodes = len(v1.get_default_graph().get_operations())

  def after_create_session(self, session, coord):
    self.session_created = self._now()
    self.session_cpu = self._cpu()

  def after_run(self, run_context, run_values):
    self.loop_ends.append(self._now())
    self.loop_end_cpus.append(self._cpu())


def make_estimator(model_name, count, root, cluster=''):
  """(estimator, model, steps per loop) of a row: `count` replicas in this
  process, on `cluster` (RunConfig's; '' for none, None for TF_CONFIG's),
  at a fixed batch per replica."""
  factory, per_replica, ipl = MODELS[model_name]
  model = factory()
  config = he.RunConfig(
      model_dir=os.path.join(root, '%s_%d' % (model_name, count)),
      iterations_per_loop=ipl, num_replicas=count, cluster=cluster,
      save_checkpoints_steps=NEVER, log_step_count_steps=NEVER)
  workers = config.cluster.num_workers if config.cluster else 1
  estimator = he.HookEstimator(
      model.model_fn, config=config,
      train_batch_size=per_replica * count * workers)
  return estimator, model, ipl


def measure(model_name, count, loops, root, cluster=''):
  """One row: the phases of a train() call of `loops` loops at `count`
  replicas (on `cluster`, as make_estimator's). Returns a dict of
  figures."""
  estimator, model, ipl = make_estimator(model_name, count, root, cluster)
  cpu_start = process_cpu()
  start = time.monotonic()
  hook = PhaseHook(start, cpu_start)

  def input_fn(params):
    hook.input_fn_called()
    return model.train_input_fn(params)
  estimator.train(input_fn, steps=ipl * loops, hooks=[hook])
  total = time.monotonic() - start
  v1.summary.FileWriterCache.clear()
  steady = steady_step(hook.loop_ends, ipl)
  steady_cpu = steady_step(hook.loop_end_cpus, ipl)
  first_step = hook.loop_ends[0] - (ipl - 1) * steady
  first_step_cpu = hook.loop_end_cpus[0] - (ipl - 1) * steady_cpu
  return {
      'model': model_name, 'replicas': count, 'nodes': hook.nodes,
      'build_cpu': hook.build_cpu, 'session_cpu': hook.session_cpu,
      'first_step_cpu': first_step_cpu, 'steady_step_cpu': steady_cpu,
      'graph_built': hook.graph_built,
      'session_created': hook.session_created,
      'first_step': first_step, 'steady_step': steady, 'total': total,
  }


def steady_step(loop_ends, ipl):
  """The median of the later loops' times (from the ends of all loops) over
  their `ipl` steps."""
  loops = [b - a for a, b in zip(loop_ends, loop_ends[1:])]
  return statistics.median(loops) / ipl


def fmt(value, form):
  return '-' if value is None else form % value


def per_replica(row, rows, key):
  """(row[key] - the same at 1 replica) / (N - 1), or None."""
  ones = [r for r in rows if r['model'] == row['model'] and
          r['replicas'] == 1]
  if row['replicas'] == 1 or not ones:
    return None
  return (row[key] - ones[0][key]) / (row['replicas'] - 1)


HEADER = ('| model | replicas | graph ops | graph built s (CPU s) | '
          'session created s (CPU s) | first step s (CPU s) | '
          'per replica s (CPU s) | steady step ms (CPU ms) |')


def pair(wall, cpu, form='%.2f', scale_by=1):
  if wall is None:
    return '-'
  return '%s (%s)' % (form % (wall * scale_by), form % (cpu * scale_by))


def table(rows):
  lines = [HEADER, '|---|---:|---:|---:|---:|---:|---:|---:|']
  for row in rows:
    lines.append('| %s | %d | %d | %s | %s | %s | %s | %s |' % (
        row['model'], row['replicas'], row['nodes'],
        pair(row['graph_built'], row['build_cpu']),
        pair(row['session_created'], row['session_cpu']),
        pair(row['first_step'], row['first_step_cpu']),
        pair(per_replica(row, rows, 'first_step'),
             per_replica(row, rows, 'first_step_cpu'), '%.3f'),
        pair(row['steady_step'], row['steady_step_cpu'], '%.1f', 1000)))
  return lines


# Loopback workers: each worker process (the chief included) runs this
# many replicas; the target for the chief's graph nodes and build CPU at
# 4 workers over 1.
WORKERS = (1, 2, 4)
QUICK_WORKERS = (1, 2)
TARGET_WORKERS = 4
TARGET_RATIO = 1.2
LOOPBACK_SECS = 600  # No loopback cluster of this bench may run longer.


def loopback_task(model_name, loops):
  """One task of a loopback cluster, TF_CONFIG set: trains one replica of
  `model_name`; the chief measures its train() call (measure()) and prints
  its row as one line 'ROW <json>'."""
  root = tempfile.mkdtemp(prefix='scale_task_')
  # A chief alone (W = 1) has no Cluster: it trains in its process.
  cluster = cluster_lib.from_environment()
  try:
    if cluster is None or cluster.is_chief:
      row = measure(model_name, 1, loops, root, cluster=None)
      print('ROW ' + json.dumps(row))
      sys.stdout.flush()
    else:
      estimator, model, ipl = make_estimator(model_name, 1, root, None)
      estimator.train(model.train_input_fn, steps=ipl * loops)
  finally:
    shutil.rmtree(root, ignore_errors=True)


def measure_loopback(model_name, workers, loops, timeout=LOOPBACK_SECS):
  """A loopback cluster of `workers` processes (the chief and workers - 1
  workers, 1 replica each, each in its own process group, killed on every
  path) training `model_name` for `loops` loops; the chief's row, with
  'workers' and the cluster's 'ports'."""
  from bench import cluster as cluster_bench  # pylint: disable=g-import-not-at-top
  ports = cluster_bench.free_ports(workers)
  argv = ['--loopback_task', '--workers_model', model_name, '--loops',
          str(loops)]
  logs = tempfile.mkdtemp(prefix='scale_loopback_')
  processes = []
  try:
    tasks = [('worker', i) for i in range(workers - 1)] + [('chief', 0)]
    for task_type, index in tasks:
      with open(os.path.join(logs, '%s_%d.log' % (task_type, index)),
                'w') as output:
        processes.append(cluster_bench.launch(
            'bench.scale', argv,
            cluster_bench.tf_config(ports, task_type, index), output))
    deadline = time.monotonic() + timeout
    # Started last, the chief is waited for first: the workers end after
    # it, when the run does.
    for process, (task_type, index) in reversed(list(zip(processes,
                                                         tasks))):
      try:
        code = process.wait(max(deadline - time.monotonic(), 0.1))
      except subprocess.TimeoutExpired:
        code = 'timed out after %d s' % timeout
      if code != 0:
        with open(os.path.join(logs, '%s_%d.log' % (task_type,
                                                    index))) as f:
          raise RuntimeError('loopback %s %d of %d workers failed (%s): %s' %
                             (task_type, index, workers, code,
                              f.read()[-3000:]))
    with open(os.path.join(logs, 'chief_0.log')) as f:
      lines = [line[4:] for line in f.read().splitlines()
               if line.startswith('ROW ')]
    row = json.loads(lines[-1])
  finally:
    for process in processes:
      cluster_bench.kill_group(process)
      try:
        process.wait(10)
      except subprocess.TimeoutExpired:
        pass
    shutil.rmtree(logs, ignore_errors=True)
  row['workers'] = workers
  row['ports'] = ports
  return row


def loopback_ratios(rows):
  """(W, nodes at W / at 1, build CPU at W / at 1) for the most workers
  measured, or None without W = 1 and a W > 1."""
  ones = [r for r in rows if r['workers'] == 1]
  most = max(rows, key=lambda r: r['workers']) if rows else None
  if not ones or most['workers'] == 1:
    return None
  return (most['workers'], most['nodes'] / ones[0]['nodes'],
          most['build_cpu'] / ones[0]['build_cpu'])


LOOPBACK_HEADER = ('| workers | chief graph nodes | chief build CPU s | '
                   'wall to first step s |')


def loopback_table(rows):
  lines = [LOOPBACK_HEADER, '|---:|---:|---:|---:|']
  for row in rows:
    lines.append('| %d | %d | %.2f | %.2f |' % (
        row['workers'], row['nodes'], row['build_cpu'], row['first_step']))
  ratios = loopback_ratios(rows)
  if ratios is None:
    return lines
  workers, nodes, cpu = ratios
  if workers == TARGET_WORKERS:
    verdict = ('target at most %.1fx: %s' % (
        TARGET_RATIO, 'met' if max(nodes, cpu) <= TARGET_RATIO
        else 'missed'))
  else:
    verdict = ('the target (at most %.1fx) is set at W = %d, not judged' %
               (TARGET_RATIO, TARGET_WORKERS))
  lines.append('')
  lines.append('W=%d / W=1: chief graph nodes %.2fx, chief build CPU %.2fx '
               '(%s)' % (workers, nodes, cpu, verdict))
  return lines


def run_loopback(args):
  """The loopback-workers part: one cluster per worker count, its table."""
  counts = args.workers or (QUICK_WORKERS if args.quick else WORKERS)
  rows = []
  for workers in counts:
    row = measure_loopback(args.workers_model, workers, args.loops)
    rows.append(row)
    print('loopback %s W=%d: chief %d nodes, build CPU %.2f s, first step '
          '%.2f s' % (row['model'], workers, row['nodes'], row['build_cpu'],
                      row['first_step']))
    sys.stdout.flush()
  print()
  print('Loopback workers (127.0.0.1, every process on this machine), %s, '
        '1 replica a worker, from the chief:' % args.workers_model)
  for line in loopback_table(rows):
    print(line)
  return rows


def describe(row):
  return ('%s N=%d%s: %d ops, graph built %s s, session created %s s, '
          'first step %s s, steady step %s ms (wall, CPU)' % (
              row['model'], row['replicas'],
              ' [%s]' % row['tree'] if row.get('tree') else '', row['nodes'],
              pair(row['graph_built'], row['build_cpu']),
              pair(row['session_created'], row['session_cpu']),
              pair(row['first_step'], row['first_step_cpu']),
              pair(row['steady_step'], row['steady_step_cpu'], '%.1f',
                   1000)))


# A child measuring one row with the hookestimator package of `tree`
# (argv: tree, this checkout, model, replicas, loops): the package is
# imported from `tree` first, then bench from this checkout.
_CHILD = """
import json, sys, tempfile
tree, here, model, count, loops = sys.argv[1:]
sys.path.insert(0, tree)
import hookestimator
sys.path[0] = here
from bench import scale
row = scale.measure(model, int(count), int(loops), tempfile.mkdtemp())
row['package'] = hookestimator.__file__
print('ROW ' + json.dumps(row))
"""
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def measure_in_child(tree, model_name, count, loops):
  """measure() in a process of its own, with `tree`'s hookestimator."""
  output = subprocess.run(
      [sys.executable, '-c', _CHILD, tree, HERE, model_name, str(count),
       str(loops)], stdout=subprocess.PIPE, check=True,
      universal_newlines=True).stdout
  rows = [line[4:] for line in output.splitlines() if line.startswith('ROW ')]
  return json.loads(rows[-1])


def ratio_lines(rows):
  """For each (model, N > 1), this tree's per-replica startup over the
  baseline's, wall and CPU."""
  lines = ['| model | replicas | per replica s, baseline (CPU s) | '
           'per replica s, this tree (CPU s) | ratio wall | ratio CPU |',
           '|---|---:|---:|---:|---:|---:|']
  for row in rows:
    if row['tree'] != 'this' or row['replicas'] == 1:
      continue
    same = [r for r in rows if r['model'] == row['model']]
    base = [r for r in same if r['tree'] == 'baseline' and
            r['replicas'] == row['replicas']][0]
    mine = per_replica(row, [r for r in same if r['tree'] == 'this'],
                       'first_step'), per_replica(
                           row, [r for r in same if r['tree'] == 'this'],
                           'first_step_cpu')
    theirs = per_replica(base, [r for r in same if r['tree'] == 'baseline'],
                         'first_step'), per_replica(
                             base, [r for r in same
                                    if r['tree'] == 'baseline'],
                             'first_step_cpu')
    lines.append('| %s | %d | %s | %s | %.2fx | %.2fx |' % (
        row['model'], row['replicas'], pair(*theirs, form='%.3f'),
        pair(*mine, form='%.3f'), mine[0] / theirs[0], mine[1] / theirs[1]))
  return lines


def run(args):
  for line in describe_machine():
    print(line)
  sys.stdout.flush()
  root = tempfile.mkdtemp(prefix='scale_')
  rows = []
  try:
    for model_name in args.models:
      counts = args.replicas or (QUICK_REPLICAS if args.quick
                                 else REPLICAS[model_name])
      for count in counts:
        if args.baseline:
          # Side by side, alternating which goes first.
          trees = [('baseline', args.baseline), ('this', HERE)]
          if count % 2:
            trees.reverse()
          for name, tree in trees:
            row = measure_in_child(tree, model_name, count, args.loops)
            row['tree'] = name
            rows.append(row)
            print(describe(row))
            sys.stdout.flush()
          continue
        row = measure(model_name, count, args.loops, root)
        rows.append(row)
        print(describe(row))
        sys.stdout.flush()
  finally:
    shutil.rmtree(root, ignore_errors=True)
  print()
  if args.baseline:
    for name in ('baseline', 'this'):
      print('%s (%s):' % (name, args.baseline if name == 'baseline'
                          else HERE))
      for line in table([r for r in rows if r['tree'] == name]):
        print(line)
      print()
    for line in ratio_lines(rows):
      print(line)
  else:
    for line in table(rows):
      print(line)
  if not args.no_workers:
    print()
    run_loopback(args)
  return rows


def parse_args(argv=None):
  parser = argparse.ArgumentParser(
      prog='python -m bench.scale',
      description='Startup and step cost of N replicas in one process.')
  parser.add_argument('--models', nargs='+', choices=sorted(MODELS),
                      default=['mlp', 'gpt2'])
  parser.add_argument('--replicas', nargs='+', type=int, default=None,
                      help='replica counts (default: each model\'s list)')
  parser.add_argument('--loops', type=int, default=4,
                      help='loops per train() call (at least 2)')
  parser.add_argument('--quick', action='store_true',
                      help='N = 1 and 2 only')
  parser.add_argument('--baseline', default=None,
                      help='another checkout of the repository: each row '
                      'also runs with its hookestimator package, side by '
                      'side (each row in a process of its own), and the '
                      'per-replica startup ratios are printed')
  parser.add_argument('--workers', nargs='+', type=int, default=None,
                      help='worker counts of the loopback-workers part '
                      '(default: 1 2 4; 1 2 with --quick)')
  parser.add_argument('--workers_model', choices=sorted(MODELS),
                      default='mlp',
                      help='the model of the loopback-workers part')
  parser.add_argument('--no_workers', action='store_true',
                      help='skip the loopback-workers part')
  parser.add_argument('--loopback_task', action='store_true',
                      help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.loops < 2:
    parser.error('--loops must be at least 2, got %d' % args.loops)
  if args.workers and min(args.workers) < 1:
    parser.error('--workers must be at least 1, got %s' % args.workers)
  return args


def main(argv=None):
  args = parse_args(argv)
  if args.loopback_task:
    loopback_task(args.workers_model, args.loops)
    return
  # A SIGTERM (a timeout) unwinds, so that every task's group is killed.
  signal.signal(signal.SIGTERM, lambda *unused: sys.exit(128 + signal.SIGTERM))
  run(args)


if __name__ == '__main__':
  main()
