"""Clusters over loopback: a chief and a worker, each a process of its own
(tests/cluster_task.py) with a TF server on a free 127.0.0.1 port, started
in its own process group, killed with it when the test ends.

Each worker builds and runs its own replicas. Two workers of one replica
train as one process of two replicas; only the chief writes checkpoints
(a worker its input positions); a lost worker stops the chief within 60 s
naming it, and a restart resumes exactly; a worker alone gives up within
its timeout; no port still listens after any of these runs.
"""
import glob
import os
import signal
import time

import numpy as np
import pytest
import tensorflow as tf

from hookestimator import cluster as cluster_lib
from hookestimator import config as config_lib
from tests import processes as processes_lib
from tests.processes import LOST_SECS
from tests.processes import REPO_ROOT
from tests.processes import RUN_SECS
from tests.processes import free_ports
from tests.processes import listening
from tests.processes import tf_config

v1 = tf.compat.v1
TASK = os.path.join(REPO_ROOT, 'tests', 'cluster_task.py')


class Processes(processes_lib.Processes):
  """Starts tests/cluster_task.py too."""

  def start(self, name, cluster, model_dir, max_steps, replicas=1,
            timeout=30, batches=None):
    """Starts tests/cluster_task.py."""
    return self.start_command(name, [
        TASK, cluster, str(model_dir), str(max_steps), str(replicas),
        str(timeout)] + ([batches] if batches else []))


def run_cluster(processes, ports, model_dir, max_steps, tmp_path, tag='',
                batches=None):
  # A worker keeps its input position in its own model_dir, the same
  # across restarts.
  worker = processes.start('worker' + tag, tf_config(ports, 'worker'),
                           tmp_path / 'worker_dir', max_steps,
                           batches=batches)
  chief = processes.start('chief' + tag, tf_config(ports, 'chief'),
                          model_dir, max_steps, batches=batches)
  chief_code, _, chief_out = processes.wait(chief)
  worker_code, _, worker_out = processes.wait(worker)
  assert chief_code == 0, chief_out[-3000:]
  assert worker_code == 0, worker_out[-3000:]
  assert 'the run ended' in worker_out
  return chief_out


def start_and_wait_for_a_checkpoint(processes, ports, model_dir, tmp_path):
  """Starts a worker and a chief training without end; returns (worker,
  chief) once the chief has written a checkpoint, has ended, or RUN_SECS
  have passed."""
  worker = processes.start('worker', tf_config(ports, 'worker'),
                           tmp_path / 'worker_dir', 10 ** 6)
  chief = processes.start('chief', tf_config(ports, 'chief'), model_dir,
                          10 ** 6)
  deadline = time.monotonic() + RUN_SECS
  while (v1.train.latest_checkpoint(str(model_dir)) is None and
         time.monotonic() < deadline and chief.poll() is None):
    time.sleep(0.2)
  return worker, chief


def variables(model_dir):
  path = v1.train.latest_checkpoint(str(model_dir))
  return {name: v1.train.load_variable(path, name)
          for name, _ in v1.train.list_variables(path)
          if not name.startswith('hookestimator/')}


def assert_same_variables(got, expected):
  assert sorted(got) == sorted(expected)
  for name in expected:
    np.testing.assert_allclose(got[name], expected[name], atol=1e-5,
                               err_msg=name)


def resume_matches_an_uninterrupted_run(model_dir, tmp_path):
  """Restarts both tasks on model_dir's last checkpoint for 12 more steps;
  asserts they end on the variables of one process of two replicas never
  interrupted, and leave no port listening."""
  step = int(v1.train.load_variable(
      v1.train.latest_checkpoint(str(model_dir)), 'global_step'))
  max_steps = step + 12
  ports = free_ports(2)
  with Processes(tmp_path) as processes:
    single = processes.start('single', '', tmp_path / 'single', max_steps,
                             replicas=2)
    run_cluster(processes, ports, model_dir, max_steps, tmp_path,
                tag='_again')
    code, _, single_out = processes.wait(single)
    assert code == 0, single_out[-3000:]
  assert not any(listening(p) for p in ports)
  got = variables(model_dir)
  assert int(got['global_step']) == max_steps
  assert_same_variables(got, variables(tmp_path / 'single'))


def _meta_graph_def(model_dir):
  from tensorflow.core.protobuf import meta_graph_pb2  # pylint: disable=g-import-not-at-top
  meta = meta_graph_pb2.MetaGraphDef()
  path = sorted(glob.glob(os.path.join(str(model_dir), '*.meta')))[0]
  with open(path, 'rb') as f:
    meta.ParseFromString(f.read())
  return meta.graph_def


def test_two_workers_train_as_two_replicas_and_only_the_chief_writes(
    tmp_path):
  ports = free_ports(2)
  with Processes(tmp_path) as processes:
    single = processes.start('single', '', tmp_path / 'single', 20,
                             replicas=2)
    run_cluster(processes, ports, tmp_path / 'chief_dir', 20, tmp_path)
    code, _, out = processes.wait(single)
    assert code == 0, out[-3000:]
  assert not any(listening(p) for p in ports)
  got = variables(tmp_path / 'chief_dir')
  assert int(got['global_step']) == 20
  assert_same_variables(got, variables(tmp_path / 'single'))
  # The worker wrote its input positions alone, at the chief's checkpoint
  # steps; the chief's checkpoints hold its own.
  written = sorted(os.listdir(str(tmp_path / 'worker_dir')))
  assert written == ['input_positions'], written
  positions = os.listdir(str(tmp_path / 'worker_dir' / 'input_positions' /
                             'worker_1'))
  assert {'position-8.index', 'position-16.index',
          'position-20.index'} <= set(positions), positions
  keys = [name for name, _ in v1.train.list_variables(
      v1.train.latest_checkpoint(str(tmp_path / 'chief_dir')))]
  assert len([k for k in keys if k.startswith(
      'hookestimator/input_position/')]) == 1
  # The meta graph the chief wrote holds the chief's replicas alone (each
  # worker builds its own): gradients summed by collective all-reduces,
  # and every op on the chief.
  graph_def = _meta_graph_def(tmp_path / 'chief_dir')
  devices = [n.device for n in graph_def.node] + [
      n.device for f in graph_def.library.function for n in f.node_def]
  assert not any('/job:worker' in d for d in devices)
  reduces = [n.device for n in graph_def.node if n.op.startswith(
      'CollectiveReduce')]
  reduces += [n.device for f in graph_def.library.function
              for n in f.node_def if n.op.startswith('CollectiveReduce')]
  assert reduces and all('/job:chief/task:0' in d for d in reduces), reduces


def test_every_task_runs_the_same_command(tmp_path):
  """`hookestimator train` on each task, TF_CONFIG telling them apart:
  the chief trains, reports and writes; the worker writes nothing."""
  ports = free_ports(2)
  command = ['-m', 'hookestimator', 'train',
             '--gin_file=runs/digits_mlp.gin', '--gin_param=TRAIN_STEPS = 20',
             '--gin_param=RunConfig.iterations_per_loop = 10']
  with Processes(tmp_path) as processes:
    # The chief first here (the other tests start the worker first).
    chief = processes.start_command(
        'chief', command + ['--model_dir=%s' % (tmp_path / 'chief_dir')],
        tf_config(ports, 'chief'))
    time.sleep(1)  # Not needed to pass: the worker only comes later.
    worker = processes.start_command(
        'worker', command + ['--model_dir=%s' % (tmp_path / 'worker_dir')],
        tf_config(ports, 'worker'))
    chief_code, _, chief_out = processes.wait(chief)
    worker_code, _, worker_out = processes.wait(worker)
  assert chief_code == 0, chief_out[-3000:]
  assert worker_code == 0, worker_out[-3000:]
  assert 'to global step 20' in chief_out
  assert os.path.exists(str(tmp_path / 'chief_dir' / 'operative_config-0.gin'))
  # The worker wrote its input positions alone.
  assert os.listdir(str(tmp_path / 'worker_dir')) == ['input_positions']
  assert not any(listening(p) for p in ports)


def test_a_lost_worker_stops_the_chief_and_a_restart_resumes_exactly(
    tmp_path):
  """kill -9 of the worker mid-run: the chief exits non-zero within 60 s
  naming it. Both restarted, training resumes from the chief's last
  checkpoint to exactly max_steps with every worker's data position exact:
  the variables are those of a run never interrupted (so every example
  was read once per epoch)."""
  model_dir = tmp_path / 'chief_dir'
  ports = free_ports(2)
  with Processes(tmp_path) as processes:
    worker, chief = start_and_wait_for_a_checkpoint(processes, ports,
                                                    model_dir, tmp_path)
    assert v1.train.latest_checkpoint(str(model_dir)) is not None
    os.kill(worker.pid, signal.SIGKILL)
    killed = time.monotonic()
    code = chief.wait(RUN_SECS)
    assert time.monotonic() - killed < LOST_SECS
    _, _, out = processes.wait(chief)
    assert code != 0
    assert '/job:worker/task:0' in out and 'lost task' in out, out[-3000:]
  assert not any(listening(p) for p in ports)
  resume_matches_an_uninterrupted_run(model_dir, tmp_path)


def test_a_lost_chief_stops_the_worker_naming_it_and_a_restart_resumes(
    tmp_path):
  """kill -9 of the chief mid-run: the worker exits non-zero within 60 s
  naming it. Both restarted, training resumes from the chief's last
  checkpoint, each worker's input from its position saved beside it, to
  the variables of a run never interrupted."""
  model_dir = tmp_path / 'chief_dir'
  ports = free_ports(2)
  with Processes(tmp_path) as processes:
    worker, chief = start_and_wait_for_a_checkpoint(
        processes, ports, model_dir, tmp_path)
    os.kill(chief.pid, signal.SIGKILL)
    killed = time.monotonic()
    code = worker.wait(RUN_SECS)
    assert time.monotonic() - killed < LOST_SECS
    _, _, out = processes.wait(worker)
  assert code != 0
  assert 'lost task /job:chief/task:0' in out, out[-3000:]
  assert not any(listening(p) for p in ports)
  resume_matches_an_uninterrupted_run(model_dir, tmp_path)


def test_inputs_of_one_length_end_every_worker_at_their_last_batch(
    tmp_path):
  # 6 batches on each worker: every task ends at step 6, the chief's last
  # checkpoint at 6, as one process of two replicas reading both shards.
  # Trained again, every worker reads its input from the start (the
  # positions saved at its end are its beginning), to step 12.
  for end in (6, 12):
    ports = free_ports(2)
    with Processes(tmp_path) as processes:
      run_cluster(processes, ports, tmp_path / 'chief_dir', 100, tmp_path,
                  tag=str(end), batches='6')
    assert not any(listening(p) for p in ports)
    assert int(variables(tmp_path / 'chief_dir')['global_step']) == end


def test_an_input_ending_before_the_others_stops_the_run_naming_it(
    tmp_path):
  # The worker's input ends a batch before the chief's, which waits at the
  # next step's all-reduce for it. TF 1.15 ends that all-reduce with the
  # worker's OutOfRangeError: the whole run ends at the shorter input's
  # last batch (step 5), as one process ends at its input's end. TF 2.x
  # aborts it with an internal error (or the worker's agreement at the end
  # times out): both tasks end non-zero, saying why. No port is left
  # listening either way.
  ports = free_ports(2)
  with Processes(tmp_path) as processes:
    worker = processes.start('worker', tf_config(ports, 'worker'),
                             tmp_path / 'worker_dir', 100, batches='6-')
    chief = processes.start('chief', tf_config(ports, 'chief'),
                            tmp_path / 'chief_dir', 100, batches='6-')
    # Start-up, the end agreement's 30 s, the lost-task bound.
    chief_code, _, chief_out = processes.wait(chief, RUN_SECS + LOST_SECS)
    worker_code, _, worker_out = processes.wait(worker)
  assert not any(listening(p) for p in ports)
  if chief_code == 0:
    assert worker_code == 0, worker_out[-3000:]
    assert int(variables(tmp_path / 'chief_dir')['global_step']) == 5
    return
  assert worker_code != 0, worker_out[-3000:]
  assert 'same number of batches' in worker_out, worker_out[-3000:]
  assert 'same number of batches' in chief_out or (
      'lost task /job:worker/task:0' in chief_out), chief_out[-3000:]


def test_a_worker_alone_gives_up_within_its_timeout(tmp_path):
  ports = free_ports(2)
  with Processes(tmp_path) as processes:
    worker = processes.start('worker', tf_config(ports, 'worker'),
                             tmp_path / 'worker_dir', 10, timeout=3)
    code, seconds, out = processes.wait(worker, timeout=RUN_SECS)
  assert code != 0
  assert '/job:chief/task:0' in out and 'did not answer within' in out, out
  # Start-up, the 3 s wait and at most the exit grace of a hung close.
  assert seconds < 60
  assert not any(listening(p) for p in ports)
  assert not (tmp_path / 'worker_dir').exists()


def test_sigterm_to_the_chief_checkpoints_and_stops_every_task(tmp_path):
  model_dir = tmp_path / 'chief_dir'
  ports = free_ports(2)
  with Processes(tmp_path) as processes:
    worker, chief = start_and_wait_for_a_checkpoint(processes, ports,
                                                    model_dir, tmp_path)
    os.kill(chief.pid, signal.SIGTERM)
    chief_code, _, chief_out = processes.wait(chief)
    worker_code, _, worker_out = processes.wait(worker)
  assert chief_code == 128 + signal.SIGTERM, chief_out[-3000:]
  assert 'Training stopped by SIGTERM' in worker_out, worker_out[-3000:]
  assert worker_code == 128 + signal.SIGTERM
  assert not any(listening(p) for p in ports)
  path = v1.train.latest_checkpoint(str(model_dir))
  assert path.endswith('-%d' % int(v1.train.load_variable(path,
                                                          'global_step')))


@pytest.mark.parametrize('value, message', [
    ({'cluster': {'chief': ['a:1'], 'ps': ['b:2']},
      'task': {'type': 'chief'}}, "job 'ps' is not supported"),
    ({'cluster': {'chief': ['a:1', 'c:3'], 'worker': ['b:2']},
      'task': {'type': 'chief'}}, 'exactly one "chief"'),
    ({'cluster': {'chief': ['a:1'], 'worker': ['b:99999']},
      'task': {'type': 'chief'}}, "'b:99999'"),
    ({'cluster': {'chief': ['a:1'], 'worker': ['b']},
      'task': {'type': 'chief'}}, "'b'"),
    ({'cluster': {'chief': ['a:1'], 'worker': ['b:2']},
      'task': {'type': 'worker', 'index': 1}}, 'task index 1'),
    ({'cluster': {'chief': ['a:1'], 'worker': ['b:2']},
      'task': {'type': 'boss'}}, "task type 'boss'"),
    ({'cluster': {'chief': ['a:1'], 'worker': ['b:2']}},
     'needs a "task"'),
    ('{not json', 'not valid JSON'),
    ({'cluster': {'chief': ['a:1'], 'worker': ['a:1']},
      'task': {'type': 'chief'}}, 'must be distinct'),
])
def test_bad_clusters_are_refused_naming_the_bad_value(value, message):
  with pytest.raises((ValueError, TypeError)) as raised:
    config_lib.RunConfig(cluster=value)
  assert message in str(raised.value)


@pytest.mark.parametrize('timeout', [0, -1, 'soon', None])
def test_a_bad_peer_timeout_is_refused(timeout):
  with pytest.raises((ValueError, TypeError)) as raised:
    config_lib.RunConfig(peer_timeout_secs=timeout)
  assert 'peer_timeout_secs' in str(raised.value)


def test_a_cluster_is_fed_by_the_infeed_thread():
  cluster = tf_config([2000, 2001], 'chief')
  assert config_lib.RunConfig(cluster=cluster).feeding == 'infeed_thread'
  assert config_lib.RunConfig().replace(cluster=cluster).feeding == (
      'infeed_thread')
  with pytest.raises(ValueError) as raised:
    config_lib.RunConfig(cluster=cluster, feeding='in_loop')
  assert "feeding='in_loop' cannot be honoured on a cluster" in str(
      raised.value)


def test_the_command_runs_only_train_on_a_cluster(tmp_path, monkeypatch,
                                                  capsys):
  import gin  # pylint: disable=g-import-not-at-top
  from hookestimator import main as main_lib  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv('TF_CONFIG', tf_config([2000, 2001], 'chief'))
  gin.clear_config()
  try:
    code = main_lib.main(['evaluate', '--model_dir=%s' % tmp_path,
                          '--gin_file=runs/digits_mlp.gin'])
  finally:
    gin.clear_config()
  assert code == main_lib.EXIT_CONFIG_ERROR
  assert 'evaluate does not run on a cluster' in capsys.readouterr().err


def test_tf_config_gives_the_task_and_its_devices():
  parsed = cluster_lib.from_environment({'TF_CONFIG': tf_config(
      [2000, 2001, 2002], 'worker', 1)})
  assert parsed.num_workers == 3
  assert parsed.worker_index == 2
  assert parsed.replica_devices('cpu', 2)[-1] == '/job:worker/task:1/device:CPU:1'
  assert parsed.host_device(0) == '/job:chief/task:0/device:CPU:0'
  assert cluster_lib.from_environment({}) is None
  # The chief alone is no cluster: training runs in the process.
  assert cluster_lib.parse({'cluster': {'chief': ['a:1']},
                            'task': {'type': 'chief'}}) is None
  config = config_lib.RunConfig(cluster=tf_config([2000, 2001], 'chief'))
  assert config.replace(num_replicas=2).cluster == config.cluster


def test_the_cluster_bench_reports_one_and_two_workers(tmp_path):
  with Processes(tmp_path) as processes:
    bench = processes.start_command('bench', ['-m', 'bench.cluster',
                                              '--quick'])
    code, _, out = processes.wait(bench)
  assert code == 0, out[-3000:]
  rows = [line.split('|')[1:-1] for line in out.splitlines()
          if line.startswith('| 32 ')]
  assert [int(row[2]) for row in rows] == [1, 2]
  assert all(float(row[3]) > 0 for row in rows)
  # 2 (W - 1) x 4 bytes x 2,410 parameters.
  assert [int(row[5]) for row in rows] == [0, 19280]


def test_a_peer_is_lost_when_it_refuses_or_stays_silent(monkeypatch):
  from hookestimator import task_server  # pylint: disable=g-import-not-at-top
  now = [100.0]
  monkeypatch.setattr(task_server.time, 'monotonic', lambda: now[0])
  refused = task_server.Health()
  for _ in range(task_server.REFUSALS_LOST - 1):
    refused.record(task_server.REFUSED)
  refused.record(task_server.ANSWERED)  # An answer starts the count again.
  for _ in range(task_server.REFUSALS_LOST - 1):
    refused.record(task_server.REFUSED)
  assert not refused.lost
  refused.record(task_server.REFUSED)
  assert refused.lost
  # A slow machine answers late: silence is loss only after SILENT_SECS.
  silent = task_server.Health()
  for _ in range(10):
    now[0] += task_server.SILENT_SECS / 10.0 - 0.01
    silent.record(task_server.SILENT)
  assert not silent.lost
  now[0] += 0.2
  silent.record(task_server.SILENT)
  assert silent.lost
  assert task_server.outcome_of(tf.errors.UnavailableError(None, None, 'gone')) == (
      task_server.REFUSED)
  assert task_server.outcome_of(tf.errors.DeadlineExceededError(None, None, 'x')) == (
      task_server.SILENT)
