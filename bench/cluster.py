"""One and two workers of a cluster on loopback: examples/sec, the
all-reduce's time per step and the bytes it moves per step.

    python -m bench.cluster [--steps 300] [--hidden 128 2048] [--quick]

For each MLP size (digits_mlp with one hidden layer of H units) it runs
1 worker (the chief alone, in its own process) and 2 workers (chief and
worker, each a process with a TF server on a free 127.0.0.1 port), one
replica each, at 64 examples per worker per step (the global batch grows
with the workers), both fed by the infeed thread (a cluster's only
feeding path). Each row reports:

- examples/sec: global examples per second over the loops after the first
  (the chief's hook times loop ends);
- all-reduce ms/step: a loop of steps that does only what the training
  step's cross-worker sum does, on the same cluster before training (a
  collective all-reduce of a gradient-sized tensor, stored on each
  worker);
- bytes/step: what the ring all-reduce sends per step, all workers
  together, 2 (W - 1) x 4 P for P parameters and W workers (each worker
  sends 2 (W - 1) / W x 4 P; 0 with one worker).

All processes share this machine's cores, so 2 workers here measure the
runtime's overhead, not a speed-up.
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time

PER_WORKER_BATCH = 64
ITERATIONS_PER_LOOP = 25
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHILD_SECS = 600


def free_ports(count):
  """`count` free 127.0.0.1 ports, chosen now."""
  sockets = [socket.socket() for _ in range(count)]
  try:
    for s in sockets:
      s.bind(('127.0.0.1', 0))
    return [s.getsockname()[1] for s in sockets]
  finally:
    for s in sockets:
      s.close()


def tf_config(ports, task_type, index=0):
  """TF_CONFIG of a loopback cluster: the chief on ports[0], a worker on
  each other port (no worker job when there is none); this process is
  task `index` of `task_type`."""
  jobs = {'chief': ['127.0.0.1:%d' % ports[0]]}
  if ports[1:]:
    jobs['worker'] = ['127.0.0.1:%d' % p for p in ports[1:]]
  return json.dumps({'cluster': jobs,
                     'task': {'type': task_type, 'index': index}})


def child(cluster, hidden, steps, allreduce_steps):
  """A task's process: times the all-reduce (chief), trains, prints its
  figures as one JSON line (chief)."""
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  import tempfile  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import hookestimator as he  # pylint: disable=g-import-not-at-top
  from hookestimator.models import digits_mlp  # pylint: disable=g-import-not-at-top
  v1 = tf.compat.v1
  model = digits_mlp.digits_mlp(hidden_units=(hidden,), seed=1)
  config = he.RunConfig(model_dir=tempfile.mkdtemp(prefix='bench_cluster_'),
                        iterations_per_loop=ITERATIONS_PER_LOOP,
                        save_checkpoints_steps=10 ** 6,
                        log_step_count_steps=10 ** 6, cluster=cluster,
                        # A cluster's feeding path, in both rows alike.
                        feeding='infeed_thread')
  workers = config.cluster.num_workers if config.cluster else 1
  parameters = 64 * hidden + hidden + hidden * 10 + 10
  times = []
  allreduce_ms = []

  class LoopTimes(v1.train.SessionRunHook):

    def after_run(self, run_context, run_values):
      times.append(time.monotonic())
  hooks = [LoopTimes()]
  if config.cluster is not None:
    hooks.append(_AllReduceTimer(v1, tf, config.cluster, parameters,
                                 allreduce_steps, allreduce_ms))
  estimator = he.HookEstimator(model.model_fn, config=config,
                               train_batch_size=PER_WORKER_BATCH * workers)
  estimator.train(model.train_input_fn, max_steps=steps, hooks=hooks)
  loops = len(times) - 1
  rate = (loops * ITERATIONS_PER_LOOP * PER_WORKER_BATCH * workers /
          (times[-1] - times[0]))
  print(json.dumps({'workers': workers, 'hidden': hidden,
                    'parameters': parameters, 'examples_per_sec': rate,
                    'allreduce_ms': allreduce_ms[0] if allreduce_ms else 0.0,
                    'bytes_per_step': 2 * (workers - 1) * 4 * parameters}))


def _AllReduceTimer(v1, tf, cluster, parameters, steps, out):
  """A hook timing, in the training session before the first loop (every
  worker connected), a loop of collective all-reduces of a gradient-sized
  tensor over the workers, as the training step's sums are; appends ms a
  step to `out`. Every task runs it, each its own part."""
  from hookestimator import replicas  # pylint: disable=g-import-not-at-top

  class AllReduceTimer(v1.train.SessionRunHook):

    def begin(self):
      # Each task builds its own part, as its training step's sums are.
      host = cluster.task_cpu
      with tf.device(host):
        # Outside every collection: neither saved nor checked.
        grad = v1.Variable(tf.ones([parameters]), collections=[],
                           use_resource=True, trainable=False,
                           name='allreduce_bench')

      def body(i):
        # A group of its own: the training's groups have other shapes.
        total, = replicas.collective_sum(
            [grad.read_value()], [host], group_key=3,
            instance_key=replicas.next_instance_key(),
            group_size=cluster.num_workers)
        with tf.device(host):
          store = grad.assign(total * 0.5)
        with tf.control_dependencies([store]):
          return i + 1
      self._count = v1.placeholder(tf.int32, [])
      with tf.device(host):
        self._loop = v1.while_loop(lambda i: i < self._count, body,
                                   [tf.constant(0)], parallel_iterations=1)
      self._init = [grad.initializer]

    def after_create_session(self, session, coord):
      session.run(self._init)
      session.run(self._loop, {self._count: 10})
      start = time.monotonic()
      session.run(self._loop, {self._count: steps})
      out.append((time.monotonic() - start) * 1000.0 / steps)
  return AllReduceTimer()


def launch(module, argv, tf_config_value=None, output=None):
  """Starts `python -m module argv` from the repository root, in a process
  group of its own (kill it with kill_group), with TF_CONFIG set to
  `tf_config_value` (unset when None). Its stdout and stderr go to pipes,
  or both to the open file `output`."""
  env = dict(os.environ, PYTHONPATH=REPO_ROOT)
  env.pop('TF_CONFIG', None)
  if tf_config_value is not None:
    env['TF_CONFIG'] = tf_config_value
  streams = ({'stdout': subprocess.PIPE, 'stderr': subprocess.PIPE}
             if output is None else
             {'stdout': output, 'stderr': subprocess.STDOUT})
  return subprocess.Popen([sys.executable, '-m', module] + argv,
                          cwd=REPO_ROOT, env=env, universal_newlines=True,
                          start_new_session=True, **streams)


def kill_group(process):
  """Kills `process`'s process group, if any of it is left."""
  try:
    os.killpg(process.pid, signal.SIGKILL)
  except OSError:
    pass  # Ended already, with its group.


def _run(argv, tf_config_value=None):
  return launch('bench.cluster', argv, tf_config_value)


def _result(process):
  try:
    out, err = process.communicate(timeout=CHILD_SECS)
  finally:
    kill_group(process)
  if process.returncode != 0:
    raise RuntimeError('a bench task failed (%d): %s' % (process.returncode,
                                                         err[-2000:]))
  return [json.loads(line) for line in out.splitlines()
          if line.startswith('{')]


def measure(hidden, workers, steps, allreduce_steps):
  """One row: `workers` (1 or 2) processes training the MLP."""
  child_argv = ['--child', '--hidden', str(hidden), '--steps', str(steps),
                '--allreduce_steps', str(allreduce_steps)]
  if workers == 1:
    return _result(_run(child_argv))[0]
  ports = free_ports(workers)
  others = [_run(child_argv, tf_config(ports, 'worker'))]
  chief = _run(child_argv, tf_config(ports, 'chief'))
  try:
    row = _result(chief)[0]
    for other in others:
      _result(other)
    return row
  finally:
    for process in [chief] + others:
      kill_group(process)


def report(rows):
  lines = ['Cluster on loopback (127.0.0.1), every process on this one '
           'machine (%d cores):' % os.cpu_count(),
           '| MLP hidden | parameters | workers | examples/sec | '
           'all-reduce ms/step | bytes/step |',
           '|---|---|---|---|---|---|']
  for row in rows:
    lines.append('| %d | %d | %d | %.0f | %.2f | %d |' % (
        row['hidden'], row['parameters'], row['workers'],
        row['examples_per_sec'], row['allreduce_ms'],
        row['bytes_per_step']))
  return '\n'.join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(prog='python -m bench.cluster')
  parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
  parser.add_argument('--hidden', type=int, nargs='+', default=[128, 2048],
                      help='hidden units of each MLP measured')
  parser.add_argument('--steps', type=int, default=300,
                      help='training steps of each run')
  parser.add_argument('--allreduce_steps', type=int, default=200,
                      help='steps of the all-reduce timing loop')
  parser.add_argument('--quick', action='store_true',
                      help='a smoke run: few steps, the small MLP only')
  args = parser.parse_args(argv)
  if args.steps < 2 * ITERATIONS_PER_LOOP:
    parser.error('--steps must be at least %d (two loops), got %d' %
                 (2 * ITERATIONS_PER_LOOP, args.steps))
  if args.allreduce_steps <= 0 or min(args.hidden) <= 0:
    parser.error('--allreduce_steps and --hidden must be positive, got %d '
                 'and %s' % (args.allreduce_steps, args.hidden))
  if args.child:
    child(None, args.hidden[0], args.steps, args.allreduce_steps)
    return 0
  if args.quick:
    args.hidden, args.steps, args.allreduce_steps = [32], 50, 10
  # A SIGTERM (a timeout) unwinds, so that every task's group is killed.
  signal.signal(signal.SIGTERM, lambda *unused: sys.exit(128 + signal.SIGTERM))
  rows = [measure(hidden, workers, args.steps, args.allreduce_steps)
          for hidden in args.hidden for workers in (1, 2)]
  print(report(rows))
  return 0


if __name__ == '__main__':
  sys.exit(main())
