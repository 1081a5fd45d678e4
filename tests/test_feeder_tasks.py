"""Feeders: a trainer fed by remote input workers.

Over loopback, each task a process of its own (tests/feeder_task.py) with
a TF server on a free 127.0.0.1 port, in its own process group, killed
with it when the test ends: two feeders and a chief train digits_mlp on
every example once per epoch (the model counts each example id it
trains on); finite shards end training at their last batch; a killed
feeder or chief is reported within 60 s, and a restart resumes each
feeder's shard where the checkpoint left it. In one process, on local
devices: how the infeed shares a loop out among the feeders, and what it
refuses.
"""
import functools
import os
import signal
import time

import numpy as np
import pytest
import tensorflow as tf

import hookestimator as he
from hookestimator import cluster as cluster_lib
from hookestimator import config as config_lib
from hookestimator import feeder_tasks
from tests import processes as processes_lib
from tests.feeder_task import EXAMPLES
from tests.processes import LOST_SECS
from tests.processes import REPO_ROOT
from tests.processes import RUN_SECS
from tests.processes import free_ports
from tests.processes import listening

v1 = tf.compat.v1
TASK = os.path.join(REPO_ROOT, 'tests', 'feeder_task.py')
STEPS_PER_EPOCH = 6  # EXAMPLES / 16 per batch, over both feeders.


tf_config = functools.partial(processes_lib.tf_config, job='feeder')


class Tasks(processes_lib.Processes):
  """Starts the tasks of tests/feeder_task.py."""

  def start_all(self, ports, tmp_path, model_dir, max_steps, epochs=0,
                loop_sleep=0.0, tag='', replicas=1):
    """(chief, [feeders]): the feeders first, then the chief."""
    def start(name, task_type, index, directory):
      return self.start_command(name + tag, [
          TASK, tf_config(ports, task_type, index), str(directory),
          str(max_steps), str(epochs), '30', str(loop_sleep),
          str(replicas)])
    fed = [start('feeder%d' % i, 'feeder', i, tmp_path / ('feeder_dir%d' % i))
           for i in range(len(ports) - 1)]
    return start('chief', 'chief', 0, model_dir), fed


def id_counts(model_dir):
  path = v1.train.latest_checkpoint(str(model_dir))
  return v1.train.load_variable(path, 'id_counts')


def checkpoint_step(model_dir):
  path = v1.train.latest_checkpoint(str(model_dir))
  return None if path is None else int(path.rsplit('-', 1)[1])


def start_and_wait_for_a_checkpoint(tasks, ports, tmp_path, model_dir):
  """Starts every task training without end, each loop slowed down;
  returns (chief, [feeders]) once the chief has written a checkpoint."""
  chief, fed = tasks.start_all(ports, tmp_path, model_dir, 10 ** 6,
                               loop_sleep=0.5)
  deadline = time.monotonic() + RUN_SECS
  while (checkpoint_step(model_dir) is None and
         time.monotonic() < deadline and chief.poll() is None):
    time.sleep(0.05)
  assert checkpoint_step(model_dir) is not None, 'no checkpoint was written'
  return chief, fed


def finish(tasks, chief, fed):
  """Waits for every task; asserts each ended well; the chief's output."""
  code, _, out = tasks.wait(chief)
  assert code == 0, out[-3000:]
  for feeder in fed:
    feeder_code, _, feeder_out = tasks.wait(feeder)
    assert feeder_code == 0, feeder_out[-3000:]
    assert 'the run ended' in feeder_out
  return out


def test_two_feeders_train_on_every_example_once_per_epoch(tmp_path):
  ports = free_ports(3)
  model_dir = tmp_path / 'chief_dir'
  with Tasks(tmp_path) as tasks:
    chief, fed = tasks.start_all(ports, tmp_path, model_dir,
                                 3 * STEPS_PER_EPOCH)
    out = finish(tasks, chief, fed)
  assert '{"step": %d}' % (3 * STEPS_PER_EPOCH) in out
  np.testing.assert_array_equal(id_counts(model_dir), [3] * EXAMPLES)
  keys = v1.train.list_variables(str(model_dir))
  positions = sorted(k for k, _ in keys if 'input_position' in k)
  assert [p.split('/')[-1][:9] for p in positions] == ['feeder_0_',
                                                       'feeder_1_']
  # The feeders write nothing, and every port is closed.
  assert not any((tmp_path / ('feeder_dir%d' % i)).exists() for i in (0, 1))
  assert not any(listening(p) for p in ports)


@pytest.mark.parametrize('replicas', [1, 2])
def test_finite_shards_end_training_at_their_last_batch(tmp_path, replicas):
  ports = free_ports(3)
  model_dir = tmp_path / 'chief_dir'
  with Tasks(tmp_path) as tasks:
    chief, fed = tasks.start_all(ports, tmp_path, model_dir, 1000, epochs=2,
                                 replicas=replicas)
    out = finish(tasks, chief, fed)
  assert '{"step": %d}' % (2 * STEPS_PER_EPOCH) in out
  assert checkpoint_step(model_dir) == 2 * STEPS_PER_EPOCH
  counts = id_counts(model_dir)
  if replicas == 1:
    np.testing.assert_array_equal(counts, [2] * EXAMPLES)
  else:
    # Each step's batch is two replicas' batches of 8; the checkpoint
    # holds replica 0's copy of the counts: half the ids, each twice.
    assert sorted(set(counts)) == [0, 2]
    assert list(counts).count(2) == EXAMPLES // 2
  assert not any(listening(p) for p in ports)


def kill_group(process):
  os.killpg(process.pid, signal.SIGKILL)
  process.wait(10)


def resume_and_check(tasks, ports, tmp_path, model_dir):
  """Restarts every task from the killed run's checkpoint (taken inside an
  epoch) and trains to the end of the next epoch: every id is counted
  once per epoch, so each feeder resumed its shard exactly."""
  step = checkpoint_step(model_dir)
  assert step % STEPS_PER_EPOCH, (
      'the checkpoint at step %d ends an epoch: it cannot show where the '
      'shards resumed' % step)
  epochs = step // STEPS_PER_EPOCH + 1
  chief, fed = tasks.start_all(ports, tmp_path, model_dir,
                               epochs * STEPS_PER_EPOCH, tag='_again')
  out = finish(tasks, chief, fed)
  assert out.count('Input position restored') == 2, out[-3000:]
  np.testing.assert_array_equal(id_counts(model_dir), [epochs] * EXAMPLES)
  assert not any(listening(p) for p in ports)


def test_a_killed_feeder_stops_the_run_naming_it_and_a_restart_resumes(
    tmp_path):
  ports = free_ports(3)
  model_dir = tmp_path / 'chief_dir'
  with Tasks(tmp_path) as tasks:
    chief, fed = start_and_wait_for_a_checkpoint(tasks, ports, tmp_path,
                                                 model_dir)
    kill_group(fed[1])
    killed = time.monotonic()
    code, _, out = tasks.wait(chief, LOST_SECS + 10)
    assert time.monotonic() - killed < LOST_SECS
    assert code != 0
    assert '/job:feeder/task:1' in out and 'lost task' in out, out[-3000:]
    # The other feeder was told, and ended too.
    other_code, _, other_out = tasks.wait(fed[0], LOST_SECS)
    assert other_code != 0 and 'lost task' in other_out, other_out[-3000:]
    assert not any(listening(p) for p in ports)
    resume_and_check(tasks, ports, tmp_path, model_dir)


def test_a_killed_trainer_stops_the_feeders_and_a_restart_resumes_exactly(
    tmp_path):
  ports = free_ports(3)
  model_dir = tmp_path / 'chief_dir'
  with Tasks(tmp_path) as tasks:
    chief, fed = start_and_wait_for_a_checkpoint(tasks, ports, tmp_path,
                                                 model_dir)
    kill_group(chief)
    killed = time.monotonic()
    for feeder in fed:
      code, _, out = tasks.wait(feeder, LOST_SECS + 10)
      assert time.monotonic() - killed < LOST_SECS
      assert code != 0 and '/job:chief/task:0' in out, out[-3000:]
    assert not any(listening(p) for p in ports)
    resume_and_check(tasks, ports, tmp_path, model_dir)


def test_a_feeder_alone_gives_up_within_its_timeout_and_closes_its_port(
    tmp_path):
  ports = free_ports(2)
  with Tasks(tmp_path) as tasks:
    feeder = tasks.start_command('feeder', [
        TASK, tf_config(ports, 'feeder'), str(tmp_path / 'feeder_dir'), '10',
        '0', '3'])
    code, seconds, out = tasks.wait(feeder)
  assert code != 0
  assert '/job:chief/task:0' in out and 'did not answer within' in out, out
  assert seconds < LOST_SECS
  assert not any(listening(p) for p in ports)


def test_the_feed_command_serves_a_feeder_task(tmp_path):
  ports = free_ports(3)
  model_dir = str(tmp_path / 'chief_dir')
  command = ['-m', 'hookestimator', None, '--gin_file=runs/digits_mlp.gin',
             '--gin_param=experiment.train_steps=8', '--model_dir=' + model_dir]

  def argv(mode):
    command[2] = mode
    return list(command)
  with Tasks(tmp_path) as tasks:
    fed = [tasks.start_command('feeder%d' % i, argv('feed'),
                               tf_config(ports, 'feeder', i)) for i in (0, 1)]
    chief = tasks.start_command('chief', argv('train'),
                                tf_config(ports, 'chief'))
    finish(tasks, chief, fed)
  assert checkpoint_step(model_dir) == 8
  assert not any(listening(p) for p in ports)


def test_the_feed_command_needs_a_feeder_task(tmp_path, monkeypatch, capsys):
  import gin  # pylint: disable=g-import-not-at-top
  from hookestimator import main as main_lib  # pylint: disable=g-import-not-at-top
  monkeypatch.delenv('TF_CONFIG', raising=False)
  gin.clear_config()
  try:
    code = main_lib.main(['feed', '--model_dir=%s' % tmp_path,
                          '--gin_file=runs/digits_mlp.gin'])
  finally:
    gin.clear_config()
  assert code == main_lib.EXIT_CONFIG_ERROR
  assert 'feed runs on a task of the cluster\'s "feeder" job' in (
      capsys.readouterr().err)
  with pytest.raises(ValueError) as raised:
    he.feed_forever(config_lib.RunConfig(cluster=tf_config([1, 2], 'chief')))
  assert 'task /job:chief/task:0' in str(raised.value)


def test_a_cluster_of_feeders_names_its_tasks_and_devices():
  parsed = cluster_lib.parse(tf_config([2000, 2001, 2002], 'feeder', 1))
  assert parsed.feeders == [('feeder', 0), ('feeder', 1)]
  assert parsed.peers == [('feeder', 0), ('feeder', 1)]
  assert parsed.num_workers == 1
  assert parsed.feeder_device(1) == '/job:feeder/task:1/device:CPU:0'
  config = config_lib.RunConfig(cluster=tf_config([2000, 2001], 'chief'))
  assert config.feeding == 'infeed_thread'
  with pytest.raises(ValueError) as raised:
    cluster_lib.parse({'cluster': {'chief': ['a:1'], 'worker': ['b:2'],
                                   'feeder': ['c:3']},
                       'task': {'type': 'chief'}})
  assert "\"worker\" job ['b:2']" in str(raised.value)


# In one process: the feeders' pipelines on this process's CPU.

def ids_dataset(start, count):
  """`count` batches of one id each, from `start`."""
  return tf.data.Dataset.range(start, start + count).map(
      lambda i: (tf.reshape(i, [1]), i % 2))


def local_infeeds(datasets):
  return feeder_tasks.FeederInfeeds(datasets, ['/device:CPU:0'] * len(datasets),
                               '/device:CPU:0')


def test_a_shortfall_is_fed_by_the_others_until_every_shard_ended():
  with tf.Graph().as_default():
    infeed = local_infeeds([ids_dataset(0, 5), ids_dataset(100, 2)])
    ids = infeed.dequeue()[0]
    with v1.Session() as session:
      session.run(infeed.initializer)
      assert infeed.run_loop(session, 4)
      first = [int(session.run(ids)[0]) for _ in range(4)]
      assert sorted(first) == [0, 1, 100, 101]
      # Feeder 1 has ended: feeder 0 feeds all it has left, then the
      # queue closes after it.
      assert not infeed.run_loop(session, 4)
      assert infeed.input_ended
      rest = [int(session.run(ids)[0]) for _ in range(3)]
      assert rest == [2, 3, 4]
      with pytest.raises(tf.errors.OutOfRangeError):
        session.run(ids)


def test_a_loop_is_shared_out_evenly_across_loops():
  with tf.Graph().as_default():
    infeed = local_infeeds([ids_dataset(0, 10), ids_dataset(100, 10),
                            ids_dataset(200, 10)])
    assert [infeed.shares(1) for _ in range(4)] == [{0: 1}, {1: 1}, {2: 1},
                                                   {0: 1}]
    assert infeed.shares(5) == {1: 2, 2: 2, 0: 1}
    assert infeed.shares(3) == {0: 1, 1: 1, 2: 1}


def test_a_pipeline_that_calls_python_is_refused():
  with tf.Graph().as_default():
    dataset = ids_dataset(0, 4).map(
        lambda x, y: (tf.py_function(lambda v: v, [x], tf.int64), y))
    dataset = dataset.map(lambda x, y: (tf.reshape(x, [1]), y))
    with pytest.raises(ValueError) as raised:
      local_infeeds([dataset])
  assert 'calls Python' in str(raised.value)
  assert 'EagerPyFunc' in str(raised.value)


def test_feeders_must_give_batches_of_one_structure():
  with tf.Graph().as_default():
    other = ids_dataset(0, 4).map(lambda x, y: (tf.concat([x, x], 0), y))
    with pytest.raises(ValueError) as raised:
      local_infeeds([ids_dataset(0, 4), other])
  assert 'feeder 1' in str(raised.value)


def test_large_batches_cross_in_smaller_chunks():
  small = feeder_tasks.chunk_batches([tf.float32, tf.int64],
                                [tf.TensorShape([64, 64]), tf.TensorShape([64])])
  assert small == feeder_tasks.CHUNK_BATCHES
  images = feeder_tasks.chunk_batches([tf.float32],
                                 [tf.TensorShape([256, 224, 224, 3])])
  assert images == 1
  middle = feeder_tasks.chunk_batches([tf.uint8], [tf.TensorShape([1 << 19])])
  assert middle == feeder_tasks.CHUNK_BYTES // (1 << 19) == 8
  assert feeder_tasks.chunk_batches([tf.string], [tf.TensorShape([4])]) == 1


def test_feeders_reading_the_same_data_are_warned_of(caplog):
  with tf.Graph().as_default():
    local_infeeds([ids_dataset(0, 4), ids_dataset(0, 4)])
    assert 'does not shard by' in caplog.text
    caplog.clear()
    local_infeeds([ids_dataset(0, 4).shard(2, i) for i in (0, 1)])
    assert 'does not shard by' not in caplog.text
