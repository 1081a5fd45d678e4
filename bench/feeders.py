"""The input-bound workload with its input moved out of the trainer: 0, 1
and 2 remote feeders, and tf.data service with 1 and 2 workers.

    python -m bench.feeders              # full run, about 2 minutes
    python -m bench.feeders --quick      # smoke run, under a minute

The workload is bench.peers' input-bound row (bench/peer_systems.py): the
mlp at batch 64, fed by expensive_input_fn (18 rounds of x <- tanh(x @ M)
on each batch in a sequential map, about 1.2 to 2x an mlp step of host
CPU per batch), trained by hookestimator at iterations_per_loop 100 to
--steps steps. Rows, each a fresh set of processes on this machine:

- 0 feeders: the chief alone, no cluster, the default feeding (the
  device loop reads the pipeline itself), and RunConfig(feeding=
  'infeed_thread') (the infeed thread fills the queue the device loop
  dequeues from: the same queue the feeders fill);
- 1 and 2 feeders: a cluster of a chief and `feeder` tasks, each its own
  process (and process group) with a TF server on a free 127.0.0.1 port;
  each feeder serves through hookestimator.feed_forever and runs its
  shard of the pipeline (params['input_context']), sending whole batches
  into the chief's infeed queue over TF's gRPC runtime;
- tf.data service (TF >= 2.3, where tf.data.experimental.service exists):
  a DispatchServer and 1 or 2 WorkerServers, each in its own process on a
  free loopback port, run the same pipeline; the chief alone (no cluster,
  default feeding) reads it through
  dataset.apply(tf.data.experimental.service.distribute(
  processing_mode='parallel_epochs', service='grpc://127.0.0.1:PORT')).
  It works in hookestimator's graph-mode (tf.compat.v1) loop on TF 2.15
  and 2.21: the distribute op registers the dataset's graph with the
  dispatcher when the iterator starts. TF 1.15 has no tf.data service:
  the report says so.

Sharding. A feeder's shard is every n-th example from its own offset, as
hookestimator.models.shard takes it, cut from the examples before the
pipeline batches and transforms them: expensive_input_fn is reused as is,
on the shard's examples (sharding its batched, transformed output would
make every feeder transform every batch and drop all but 1/n of them).
Every batch costs the same in every pipeline: 64 examples, 18 rounds.

What each row reports, measured inside the chief by a hook over the loops
after the first (the first holds graph start-up and the queue filling):

- steps/s: the steps of those loops over their wall time;
- trainer CPU ms/step: the chief process's CPU time (time.process_time:
  every thread of it, user and system) over the same window, per step;
- input CPU ms/step: the CPU time of the input processes (the feeders;
  the dispatcher and workers of tf.data service) over the same window, read
  by the chief from /proc/PID/stat (utime + stime, every thread; Linux
  only), per step.

Every process shares this machine's cores, so moving input out buys no
speed here unless there are spare cores; what it must show is the
trainer's CPU per step falling as the input leaves it.
"""
import argparse
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from bench.cluster import free_ports

ITERATIONS_PER_LOOP = 100  # As bench.peers' input-bound hookestimator row.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Bounds on every wait of the parent: a row's chief, a server's readiness,
# a feeder's exit once its chief is done, and a task's wait for its peers.
CHIEF_SECS = 240
READY_SECS = 60
EXIT_SECS = 30
PEER_TIMEOUT_SECS = 60


def _has_data_service():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return hasattr(tf.data, 'experimental') and hasattr(
      tf.data.experimental, 'service')


# ------------------------------------------------------------- the children
def _cpu_seconds(pids):
  """utime + stime of processes `pids`, every thread, from /proc."""
  ticks = 0
  for pid in pids:
    with open('/proc/%d/stat' % pid) as stat:
      # Fields after the command name's ')': state is field 3, utime 14.
      fields = stat.read().rsplit(')', 1)[1].split()
    ticks += int(fields[11]) + int(fields[12])
  return ticks / float(os.sysconf('SC_CLK_TCK'))


def _sharded_input_fn(params):
  """expensive_input_fn on this feeder's shard of the examples (all of
  them outside a cluster): every n-th from its own offset, as
  hookestimator.models.shard takes it."""
  from bench import common  # pylint: disable=g-import-not-at-top
  from bench import peer_systems  # pylint: disable=g-import-not-at-top
  context = params.get('input_context')
  if context is None or context.num_input_pipelines == 1:
    return peer_systems.expensive_input_fn(params)
  count, index = context.num_input_pipelines, context.input_pipeline_id
  features, labels = all_data = common.DATA
  # expensive_input_fn reads common.DATA when called; input_fn is called
  # once per feeder, one after another, in the chief's main thread.
  common.DATA = (features[index::count], labels[index::count])
  try:
    return peer_systems.expensive_input_fn(params)
  finally:
    common.DATA = all_data


def _service_input_fn(address):
  def input_fn(params):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from bench import peer_systems  # pylint: disable=g-import-not-at-top
    return peer_systems.expensive_input_fn(params).apply(
        tf.data.experimental.service.distribute(
            processing_mode='parallel_epochs', service=address))
  return input_fn


def train_child(spec):
  """The chief: trains, prints its figures as one JSON line."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import hookestimator as he  # pylint: disable=g-import-not-at-top
  from bench import peer_systems  # pylint: disable=g-import-not-at-top
  from bench.common import NEVER  # pylint: disable=g-import-not-at-top
  v1 = tf.compat.v1
  workload = peer_systems.make_workload('input-bound')
  watch = spec['watch']
  marks = []

  class Window(v1.train.SessionRunHook):
    """(wall, own CPU, input processes' CPU) at every loop's end."""

    def after_run(self, run_context, run_values):
      marks.append((time.monotonic(), time.process_time(),
                    _cpu_seconds(watch)))

  model_dir = tempfile.mkdtemp(prefix='bench_feeders_')
  try:
    config = he.RunConfig(model_dir=model_dir,
                          iterations_per_loop=ITERATIONS_PER_LOOP,
                          save_checkpoints_steps=NEVER,
                          log_step_count_steps=NEVER,
                          cluster=spec['cluster'],
                          peer_timeout_secs=PEER_TIMEOUT_SECS,
                          feeding=spec['feeding'])
    input_fn = (_service_input_fn(spec['service']) if spec['service']
                else _sharded_input_fn)
    estimator = he.HookEstimator(workload.hook_model_fn, config=config,
                                 train_batch_size=workload.batch_size)
    estimator.train(input_fn, max_steps=spec['steps'], hooks=[Window()])
    step = estimator.checkpoint_step()
  finally:
    shutil.rmtree(model_dir, ignore_errors=True)
  (wall0, cpu0, input0), (wall1, cpu1, input1) = marks[0], marks[-1]
  steps = (len(marks) - 1) * ITERATIONS_PER_LOOP
  print(json.dumps({
      'step': step, 'steps_timed': steps,
      'steps_per_sec': steps / (wall1 - wall0),
      'trainer_cpu_per_step': (cpu1 - cpu0) / steps,
      'input_cpu_per_step': (input1 - input0) / steps if watch else None,
      'feeding': config.feeding}))


def feeder_child(spec):
  import hookestimator as he  # pylint: disable=g-import-not-at-top
  he.feed_forever(he.RunConfig(cluster=spec['cluster'],
                               peer_timeout_secs=PEER_TIMEOUT_SECS))


def _ready():
  sys.stdout.write('ready\n')
  sys.stdout.flush()


def dispatcher_child(spec):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  service = tf.data.experimental.service
  server = service.DispatchServer(service.DispatcherConfig(
      port=spec['port']))
  _ready()
  server.join()


def worker_child(spec):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  service = tf.data.experimental.service
  server = service.WorkerServer(service.WorkerConfig(
      dispatcher_address='127.0.0.1:%d' % spec['dispatcher_port'],
      worker_address='127.0.0.1:%d' % spec['port'], port=spec['port']))
  _ready()
  server.join()


CHILDREN = {'train': train_child, 'feeder': feeder_child,
            'dispatcher': dispatcher_child, 'worker': worker_child}


# --------------------------------------------------------------- the parent
def _cluster(ports, task_type, index=0):
  return json.dumps({
      'cluster': {'chief': ['127.0.0.1:%d' % ports[0]],
                  'feeder': ['127.0.0.1:%d' % p for p in ports[1:]]},
      'task': {'type': task_type, 'index': index}})


class Processes(object):
  """The processes of one row, each in its own process group, its stderr
  in a file; `kill_all` kills every group, pass or fail."""

  def __init__(self):
    self.started = []
    self._dir = tempfile.mkdtemp(prefix='bench_feeders_logs_')

  def start(self, role, spec):
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, TF_CPP_MIN_LOG_LEVEL='2')
    env.pop('TF_CONFIG', None)
    log = open(os.path.join(self._dir, '%s_%d.log' % (role,
                                                      len(self.started))),
               'w+')
    process = subprocess.Popen(
        [sys.executable, '-m', 'bench.feeders', '--child', role,
         json.dumps(spec)], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
        stderr=log, universal_newlines=True, start_new_session=True)
    process.log = log
    process.role = role
    self.started.append(process)
    return process

  def error(self, process, what):
    process.log.seek(0)
    return RuntimeError('%s %s (exit %s); its stderr ends:\n%s' % (
        process.role, what, process.poll(), process.log.read()[-3000:]))

  def last_line(self, process, containing='hookestimator'):
    """The last line of the process's stderr containing `containing`
    ('' if none)."""
    process.log.seek(0)
    lines = [line.strip() for line in process.log
             if containing in line]
    return lines[-1] if lines else ''

  def wait_ready(self, process):
    """Waits for the server's 'ready' line."""
    readable, _, _ = select.select([process.stdout], [], [], READY_SECS)
    if not readable or process.stdout.readline().strip() != 'ready':
      raise self.error(process, 'was not ready within %ds' % READY_SECS)

  def result(self, process):
    try:
      out, _ = process.communicate(timeout=CHIEF_SECS)
    except subprocess.TimeoutExpired:
      raise self.error(process, 'did not end within %ds' % CHIEF_SECS)
    if process.returncode != 0:
      raise self.error(process, 'failed')
    return json.loads([line for line in out.splitlines()
                       if line.startswith('{')][-1])

  def wait_exit(self, process):
    try:
      process.wait(timeout=EXIT_SECS)
    except subprocess.TimeoutExpired:
      raise self.error(process, 'did not exit within %ds of its chief' %
                       EXIT_SECS)
    if process.returncode != 0:
      raise self.error(process, 'failed')

  def kill_all(self):
    for process in self.started:
      try:
        os.killpg(process.pid, signal.SIGKILL)
      except OSError:
        pass
      process.wait()
      process.stdout.close()
      process.log.close()
    shutil.rmtree(self._dir, ignore_errors=True)


def measure(kind, count, steps):
  """One row: kind 'local' (count 0: in_loop, 1: infeed_thread), 'feeders'
  (count feeders) or 'service' (count workers)."""
  processes = Processes()
  spec = {'steps': steps, 'cluster': None, 'service': None, 'watch': [],
          'feeding': None}
  try:
    if kind == 'local':
      spec['feeding'] = ('in_loop', 'infeed_thread')[count]
      return processes.result(processes.start('train', spec))
    if kind == 'feeders':
      ports = free_ports(count + 1)
      feeders = [processes.start('feeder',
                                 {'cluster': _cluster(ports, 'feeder', i)})
                 for i in range(count)]
      spec.update(cluster=_cluster(ports, 'chief'),
                  watch=[f.pid for f in feeders])
      chief = processes.start('train', spec)
      row = processes.result(chief)
      # The chief trained every step; a feeder that then fails, or a lost
      # task the chief saw, is told under the table.
      notes = []
      for index, feeder in enumerate(feeders):
        try:
          processes.wait_exit(feeder)
        except RuntimeError:
          notes.append('feeder %d exited %s: %s' % (
              index, feeder.returncode, processes.last_line(feeder)))
      lost = processes.last_line(chief, 'lost task')
      if lost:
        notes.append('the chief (exit 0, every step trained): %s' % lost)
      row['notes'] = notes
      return row
    dispatcher_port, = free_ports(1)
    dispatcher = processes.start('dispatcher', {'port': dispatcher_port})
    processes.wait_ready(dispatcher)
    workers = []
    for port in free_ports(count):
      workers.append(processes.start('worker', {
          'port': port, 'dispatcher_port': dispatcher_port}))
    for worker in workers:
      processes.wait_ready(worker)
    spec.update(service='grpc://127.0.0.1:%d' % dispatcher_port,
                watch=[dispatcher.pid] + [w.pid for w in workers])
    return processes.result(processes.start('train', spec))
  finally:
    processes.kill_all()


ROWS = [('local', 0, 'none (the chief alone, default feeding: in_loop)'),
        ('local', 1, "none (the chief alone, feeding='infeed_thread')"),
        ('feeders', 1, '1 remote feeder'),
        ('feeders', 2, '2 remote feeders'),
        ('service', 1, 'tf.data service, 1 worker (+ dispatcher)'),
        ('service', 2, 'tf.data service, 2 workers (+ dispatcher)')]


def _ms(value):
  return '-' if value is None else '%.3f' % (value * 1000.0)


def _ratio(value, base):
  return '-' if value is None or not base else '%.2fx' % (value / base)


def report(results, steps, service_note):
  from bench import common  # pylint: disable=g-import-not-at-top
  base = results[0][1]
  lines = common.describe_machine() + [
      '',
      'The input-bound workload of bench.peers (the mlp, batch 64, fed by '
      '18 rounds of tanh(x @ M) per batch), hookestimator at '
      'iterations_per_loop %d, %d steps a row; figures over the loops '
      'after the first. Every process on this one machine (%d cores), on '
      'loopback (127.0.0.1).' % (ITERATIONS_PER_LOOP, steps,
                                 os.cpu_count()),
      '',
      '| input outside the trainer | steps/s | ratio to 0 feeders | '
      'trainer CPU ms/step | ratio to 0 feeders | input processes CPU '
      'ms/step | all processes CPU ms/step |',
      '|---|---:|---:|---:|---:|---:|---:|']
  for (kind, count, label), row in results:
    del kind, count
    total = row['trainer_cpu_per_step'] + (row['input_cpu_per_step'] or 0.0)
    lines.append('| %s | %.1f | %s | %s | %s | %s | %s |' % (
        label, row['steps_per_sec'],
        _ratio(row['steps_per_sec'], base['steps_per_sec']),
        _ms(row['trainer_cpu_per_step']),
        _ratio(row['trainer_cpu_per_step'], base['trainer_cpu_per_step']),
        _ms(row['input_cpu_per_step']), _ms(total)))
  lines.append('')
  for (_, _, label), row in results:
    for note in row.get('notes', ()):
      lines.append('Note, %s: %s' % (label, note))
  if any(row.get('notes') for _, row in results):
    lines.append('')
  if service_note:
    lines += [service_note, '']
  by_label = dict((label, row) for (_, _, label), row in results)
  local = [row['trainer_cpu_per_step'] for (kind, _, _), row in results
           if kind == 'local']
  feeders = [by_label['1 remote feeder']['trainer_cpu_per_step'],
             by_label['2 remote feeders']['trainer_cpu_per_step']]
  falls = max(feeders) < min(local)
  lines.append(
      "Trainer CPU per step falls as the input moves out of it: %s (0 "
      "feeders: %s ms/step; 1 feeder: %s; 2 feeders: %s)." % (
          'YES' if falls else 'NO',
          ' and '.join(_ms(v) for v in local), _ms(feeders[0]),
          _ms(feeders[1])))
  return '\n'.join(lines), falls


SERVICE_GRAPH_NOTE = (
    'tf.data service rows: the chief reads the service inside '
    "hookestimator's graph-mode (tf.compat.v1) loop, by "
    "distribute(processing_mode='parallel_epochs').")


def main(argv=None):
  parser = argparse.ArgumentParser(prog='python -m bench.feeders')
  parser.add_argument('--child', nargs=2, help=argparse.SUPPRESS)
  parser.add_argument('--steps', type=int, default=20000,
                      help='training steps of each row (rounded up to '
                      'whole loops of %d)' % ITERATIONS_PER_LOOP)
  parser.add_argument('--quick', action='store_true',
                      help='a smoke run: few steps a row')
  args = parser.parse_args(argv)
  if args.child:
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    CHILDREN[args.child[0]](json.loads(args.child[1]))
    return 0
  if args.quick:
    args.steps = 3 * ITERATIONS_PER_LOOP
  loops = -(-args.steps // ITERATIONS_PER_LOOP)
  if loops < 3:
    parser.error('--steps must be at least %d (three loops: one to warm '
                 'up, two timed), got %d' % (3 * ITERATIONS_PER_LOOP,
                                             args.steps))
  steps = loops * ITERATIONS_PER_LOOP
  # A SIGTERM (a timeout) unwinds, so that every task's group is killed.
  signal.signal(signal.SIGTERM, lambda *unused: sys.exit(128 + signal.SIGTERM))
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  rows = ROWS
  if _has_data_service():
    service_note = SERVICE_GRAPH_NOTE
  else:
    rows = [r for r in ROWS if r[0] != 'service']
    service_note = ('Note: this line (TensorFlow %s) has no tf.data '
                    'service (tf.data.experimental.service came with TF '
                    '2.3), so there are no tf.data service rows.' %
                    tf.__version__)
  results = []
  for row in rows:
    results.append((row, measure(row[0], row[1], steps)))
  text, _ = report(results, steps, service_note)
  print(text)
  return 0


if __name__ == '__main__':
  sys.exit(main())
