"""A cluster's evaluator task: TF_CONFIG's `evaluator` evaluates each
checkpoint the chief writes, under model_dir/eval at its step, and exits 0
once one is at max_steps; a lost evaluator leaves training running; a lost
chief ends the evaluator non-zero, naming it. Multi-process tests run over
loopback, each process in its own group, killed when the test ends."""
import json
import os
import signal
import time

import pytest
import tensorflow as tf

import hookestimator as he
from hookestimator import config as config_lib
from hookestimator import evaluator_task
from hookestimator.models import digits_mlp
from tests import processes as processes_lib
from tests.conftest import scalar_events
from tests.processes import LOST_SECS
from tests.processes import RUN_SECS
from tests.processes import free_ports
from tests.processes import listening

v1 = tf.compat.v1


def _tf_config(ports, task_type, index=0):
  """The chief on ports[0], a worker on ports[1]; the evaluator is no job
  of the cluster, as Estimator's TF_CONFIG has it."""
  return json.dumps({
      'cluster': {'chief': ['127.0.0.1:%d' % ports[0]],
                  'worker': ['127.0.0.1:%d' % ports[1]]},
      'task': {'type': task_type, 'index': index}})


def _evaluated_steps(model_dir, name='eval'):
  return sorted({step for tag, step, _ in scalar_events(
      os.path.join(str(model_dir), name)) if tag == 'accuracy'})


def _checkpoint_steps(model_dir):
  state = v1.train.get_checkpoint_state(str(model_dir))
  return sorted(evaluator_task.checkpoint_step(p)
                for p in state.all_model_checkpoint_paths)


def test_an_evaluator_task_is_outside_the_training_cluster():
  config = config_lib.RunConfig(cluster=_tf_config([2000, 2001],
                                                   'evaluator'))
  assert config.cluster is None
  assert config.evaluator.is_evaluator and config.evaluator.chief_serves
  assert config.replace(iterations_per_loop=3).evaluator == config.evaluator
  # Listed as a job (as MultiWorkerMirroredStrategy's clusters may), the
  # chief trains without it: here alone, in its process.
  listed = {'cluster': {'chief': ['a:1'], 'evaluator': ['b:2']},
            'task': {'type': 'chief', 'index': 0}}
  assert config_lib.RunConfig(cluster=listed).cluster is None
  alone = dict(listed, task={'type': 'evaluator', 'index': 0})
  evaluator = config_lib.RunConfig(cluster=alone).evaluator
  assert evaluator is not None and not evaluator.chief_serves


@pytest.mark.parametrize('index', [1, -1, 'one'])
def test_a_bad_evaluator_index_is_refused_naming_it(index):
  with pytest.raises(ValueError) as raised:
    config_lib.RunConfig(cluster={'cluster': {'chief': ['a:1']},
                                  'task': {'type': 'evaluator',
                                           'index': index}})
  assert 'evaluator task index %r' % (index,) in str(raised.value)


def _digits_estimator(model_dir, cluster=''):
  model = digits_mlp.digits_mlp(hidden_units=(16,), seed=1)
  config = he.RunConfig(model_dir=str(model_dir), iterations_per_loop=4,
                        save_checkpoints_steps=8, keep_checkpoint_max=10,
                        cluster=cluster)
  return model, he.HookEstimator(model.model_fn, config=config,
                                 train_batch_size=16, eval_batch_size=32)


def test_train_on_the_evaluator_task_is_refused_naming_it(tmp_path):
  model, estimator = _digits_estimator(
      tmp_path, {'cluster': {'chief': ['a:1']},
                 'task': {'type': 'evaluator', 'index': 0}})
  with pytest.raises(ValueError) as raised:
    estimator.train(model.train_input_fn, max_steps=8)
  assert '/job:evaluator/task:0' in str(raised.value)
  assert not os.path.exists(str(tmp_path / 'checkpoint'))


def test_the_evaluator_evaluates_every_checkpoint_then_ends(tmp_path):
  model, trainer = _digits_estimator(tmp_path)
  trainer.train(model.train_input_fn, max_steps=32)
  assert _checkpoint_steps(tmp_path) == [8, 16, 24, 32]
  # A checkpoint deleted before its turn (keep_checkpoint_max) means the
  # evaluator fell behind: it goes on with the newest.
  os.remove(v1.train.get_checkpoint_state(
      str(tmp_path)).all_model_checkpoint_paths[1] + '.index')
  _, evaluator = _digits_estimator(
      tmp_path, {'cluster': {'chief': ['a:1']},
                 'task': {'type': 'evaluator', 'index': 0}})
  rounds = evaluator.train_and_evaluate(
      model.train_input_fn, model.eval_input_fn, max_steps=32,
      eval_every_steps=100, eval_steps=2, name='held_out')
  assert [r['global_step'] for r in rounds] == [8, 32]
  assert _evaluated_steps(tmp_path, 'eval_held_out') == [8, 32]
  # The last one is what evaluate() of that checkpoint gives.
  again = trainer.evaluate(model.eval_input_fn, steps=2)
  assert again['accuracy'] == pytest.approx(rounds[-1]['accuracy'])


def test_the_throttle_spaces_the_starts_of_evaluations():
  now = [100.0]
  slept = []

  def sleep(seconds):
    slept.append(seconds)
    now[0] += seconds
  throttle = evaluator_task.Throttle(10, clock=lambda: now[0], sleep=sleep)
  throttle.wait()
  now[0] += 3  # An evaluation of 3 s.
  throttle.wait()
  now[0] += 12
  throttle.wait()
  assert slept == [pytest.approx(7)]


def _command(model_dir, max_steps):
  return ['-m', 'hookestimator', 'train_and_evaluate',
          '--gin_file=runs/digits_mlp.gin',
          '--gin_param=TRAIN_STEPS = %d' % max_steps,
          '--gin_param=RunConfig.iterations_per_loop = 10',
          '--gin_param=RunConfig.save_checkpoints_steps = 20',
          '--gin_param=RunConfig.keep_checkpoint_max = 100',
          '--gin_param=experiment.eval_steps = 1',
          '--model_dir=%s' % model_dir]


def test_train_and_evaluate_on_a_cluster_with_an_evaluator(tmp_path):
  """The same command on every task: the chief and the worker train to
  max_steps; the evaluator evaluates each checkpoint and exits 0."""
  ports = free_ports(2)
  model_dir = tmp_path / 'model'
  with processes_lib.Processes(tmp_path) as processes:
    evaluator = processes.start_command(
        'evaluator', _command(model_dir, 60), _tf_config(ports, 'evaluator'))
    worker = processes.start_command(
        'worker', _command(tmp_path / 'worker_dir', 60),
        _tf_config(ports, 'worker'))
    chief = processes.start_command('chief', _command(model_dir, 60),
                                    _tf_config(ports, 'chief'))
    results = [processes.wait(p) for p in (chief, worker, evaluator)]
  for code, _, out in results:
    assert code == 0, out[-3000:]
  assert _checkpoint_steps(model_dir) == [20, 40, 60]
  assert _evaluated_steps(model_dir) == [20, 40, 60]
  assert 'at global step 60' in results[2][2]
  # The evaluator wrote no config of its own; the chief its one.
  assert len([f for f in os.listdir(str(model_dir))
              if f.startswith('operative_config')]) == 1
  assert not any(listening(p) for p in ports)


def _wait_for(condition, what):
  deadline = time.monotonic() + RUN_SECS
  while not condition():
    assert time.monotonic() < deadline, 'waited %d s for %s' % (RUN_SECS,
                                                               what)
    time.sleep(0.2)


def test_a_lost_evaluator_leaves_training_and_a_lost_chief_ends_it(
    tmp_path):
  ports = free_ports(2)
  model_dir = tmp_path / 'model'
  endless = 10 ** 6
  with processes_lib.Processes(tmp_path) as processes:
    first = processes.start_command(
        'evaluator', _command(model_dir, endless),
        _tf_config(ports, 'evaluator'))
    worker = processes.start_command(
        'worker', _command(tmp_path / 'worker_dir', endless),
        _tf_config(ports, 'worker'))
    chief = processes.start_command('chief', _command(model_dir, endless),
                                    _tf_config(ports, 'chief'))
    _wait_for(lambda: _evaluated_steps(model_dir) if os.path.isdir(
        str(model_dir / 'eval')) else False, 'a first evaluation')
    os.killpg(first.pid, signal.SIGKILL)
    seen = _checkpoint_steps(model_dir)[-1]
    # Training goes on without it.
    _wait_for(lambda: _checkpoint_steps(model_dir)[-1] >= seen + 20,
              'one more checkpoint')
    assert chief.poll() is None and worker.poll() is None
    before = len(list(scalar_events(str(model_dir / 'eval'))))
    second = processes.start_command(
        'evaluator_again', _command(model_dir, endless),
        _tf_config(ports, 'evaluator'))
    _wait_for(lambda: len(list(scalar_events(str(model_dir / 'eval')))) >
              before, 'an evaluation by the second evaluator')
    os.kill(chief.pid, signal.SIGKILL)
    killed = time.monotonic()
    code, _, out = processes.wait(second)
    assert time.monotonic() - killed < LOST_SECS
    worker_code, _, _ = processes.wait(worker)
  assert code != 0 and worker_code != 0
  assert 'lost task /job:chief/task:0' in out, out[-3000:]
  assert not any(listening(p) for p in ports)
