"""The `hookestimator` command, end to end on tiny runs."""
import glob
import os
import shutil
import subprocess
import sys

import gin
import numpy as np
import pytest
import tensorflow as tf

from hookestimator import main as main_lib
from hookestimator.compat import v1
from tests.conftest import read_scalars

TINY = ['--gin_file=runs/digits_mlp.gin', '--gin_param=TRAIN_STEPS = 60',
        '--gin_param=RunConfig.iterations_per_loop = 20']


@pytest.fixture(autouse=True)
def clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def run_main(model_dir, *args):
  gin.clear_config()
  return main_lib.main(['train', '--model_dir=%s' % model_dir] + list(args))


def checkpoint_step(model_dir):
  path = v1.train.latest_checkpoint(str(model_dir))
  return None if path is None else int(
      v1.train.load_variable(path, 'global_step'))


def text_summaries(model_dir):
  texts = {}
  for path in glob.glob(os.path.join(str(model_dir), 'events.out.tfevents*')):
    for event in v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.metadata.plugin_data.plugin_name == 'text':
          texts[(value.tag, event.step)] = tf.make_ndarray(
              value.tensor).item().decode()
  return texts


def test_tiny_run_writes_checkpoint_operative_config_and_events(
    tmp_path, capsys):
  assert run_main(tmp_path, *TINY) == 0
  assert checkpoint_step(tmp_path) == 60
  with open(str(tmp_path / 'operative_config-0.gin')) as f:
    operative = f.read()
  assert 'experiment.model = @digits_mlp()' in operative
  assert 'TRAIN_STEPS = 60' in operative
  assert 'RunConfig.iterations_per_loop = 20' in operative
  # One event file per run: the config's text summary is in the run's.
  assert len(_event_files(tmp_path)) == 1
  texts = text_summaries(tmp_path)
  assert 'TRAIN_STEPS = 60' in texts[('gin/operative_config', 0)]
  scalars = read_scalars(tmp_path)
  assert sorted(scalars['loss']) == list(range(1, 61))
  assert sorted(scalars['train_accuracy']) == list(range(60))
  out = capsys.readouterr().out
  assert 'global step 60' in out
  assert str(tmp_path / 'operative_config-0.gin') in out
  assert 'tensorboard --logdir %s' % tmp_path in out
  assert out.index('operative config') < out.index('The same command again')


def test_gin_params_override_the_files(tmp_path):
  assert run_main(tmp_path, *(TINY + [
      '--gin_param=RunConfig.save_checkpoints_steps = 20',
      '--gin_param=RunConfig.keep_checkpoint_max = 0',
      '--gin_param=HookEstimator.train_batch_size = 8'])) == 0
  steps = sorted(int(p.split('-')[-1].split('.')[0]) for p in
                 glob.glob(str(tmp_path / 'model.ckpt-*.index')))
  assert steps == [20, 40, 60]
  with open(str(tmp_path / 'operative_config-0.gin')) as f:
    assert 'HookEstimator.train_batch_size = 8' in f.read()


def _event_files(model_dir):
  return set(glob.glob(os.path.join(str(model_dir), 'events.out.tfevents*')))


def test_second_run_resumes_and_keeps_the_first_runs_config(tmp_path):
  model_dir = tmp_path / 'model'
  assert run_main(model_dir, *TINY) == 0
  first_run_files = _event_files(model_dir)
  assert run_main(model_dir, *(TINY + ['--gin_param=TRAIN_STEPS = 100'])) == 0
  assert checkpoint_step(model_dir) == 100
  assert os.path.exists(str(model_dir / 'operative_config-0.gin'))
  with open(str(model_dir / 'operative_config-60.gin')) as f:
    assert 'TRAIN_STEPS = 100' in f.read()
  loss = read_scalars(model_dir)['loss']
  assert sorted(loss) == list(range(1, 101))
  # The second run restored the checkpoint: its own event files hold the
  # losses of steps 60..99 only (each at the step after it), and it went on
  # from the first run's weights (a model trained from scratch starts near
  # the first run's first loss).
  (tmp_path / 'second').mkdir()
  for path in _event_files(model_dir) - first_run_files:
    shutil.copy(path, str(tmp_path / 'second'))
  assert sorted(read_scalars(tmp_path / 'second')['loss']) == list(
      range(61, 101))
  assert np.mean([loss[s] for s in range(61, 66)]) < 0.5 * np.mean(
      [loss[s] for s in range(1, 6)])


def test_run_already_at_its_steps_trains_nothing(tmp_path):
  assert run_main(tmp_path, *TINY) == 0
  before = os.path.getmtime(str(tmp_path / 'model.ckpt-60.index'))
  assert run_main(tmp_path, *TINY) == 0
  assert run_main(tmp_path, *TINY) == 0
  assert checkpoint_step(tmp_path) == 60
  assert os.path.getmtime(str(tmp_path / 'model.ckpt-60.index')) == before
  # Each run's operative config is kept.
  assert sorted(p for p in os.listdir(str(tmp_path))
                if p.startswith('operative_config')) == [
                    'operative_config-0.gin', 'operative_config-60-2.gin',
                    'operative_config-60.gin']


@pytest.mark.parametrize('args, expected', [
    (['--gin_file=runs/digits_mpl.gin'],
     ["gin file 'runs/digits_mpl.gin' not found",
      "Did you mean 'runs/digits_mlp.gin'?"]),
    (TINY + ['--gin_param=experiment.train_stepz = 5'],
     ["Configurable 'experiment' doesn't have a parameter named "
      "'train_stepz'", "Did you mean 'train_steps'?"]),
    (TINY + ['--gin_param=RunConfg.iterations_per_loop = 5'],
     ["No configurable matching 'RunConfg'", "Did you mean 'RunConfig'?"]),
    (TINY + ['--gin_param=RunConfig.iterations_per_loop = 0'],
     ['iterations_per_loop', '0']),
    (TINY + ['--gin_param=TRAIN_STEPS = -3'],
     ['experiment.train_steps', '-3']),
    (['--gin_file=runs/gpt2_tiny.gin',
      "--gin_param=gpt2.corpus_glob = '/nonexistent/**/*.txt'"],
     ["corpus_glob '/nonexistent/**/*.txt' matches nothing"]),
    (['--gin_param=experiment.train_steps = 5'],
     ["Required bindings for `experiment` not provided in config: "
      "['model']"]),
])
def test_bad_configuration_exits_2_before_training_and_loses_nothing(
    tmp_path, capsys, args, expected):
  assert run_main(tmp_path, *TINY) == 0
  before = sorted(os.listdir(str(tmp_path)))
  capsys.readouterr()
  assert run_main(tmp_path, *args) == main_lib.EXIT_CONFIG_ERROR
  err = capsys.readouterr().err
  assert err.startswith('hookestimator: configuration error:')
  for text in expected:
    assert text in err
  assert sorted(os.listdir(str(tmp_path))) == before
  assert checkpoint_step(tmp_path) == 60


def test_unwritable_model_dir_exits_2(tmp_path, capsys):
  blocker = tmp_path / 'file'
  blocker.write_text(u'not a directory')
  model_dir = blocker / 'model'
  assert run_main(model_dir, *TINY) == main_lib.EXIT_CONFIG_ERROR
  assert 'model_dir %s cannot be a directory: %s is a file' % (
      model_dir, blocker) in capsys.readouterr().err
  assert blocker.read_text() == u'not a directory'


def test_gin_files_are_found_from_any_directory(tmp_path, monkeypatch):
  monkeypatch.chdir(str(tmp_path))
  assert run_main(tmp_path / 'model', *TINY) == 0
  assert checkpoint_step(tmp_path / 'model') == 60


def test_module_command_exit_codes(tmp_path):
  def command(*args):
    return subprocess.run(
        [sys.executable, '-m', 'hookestimator', 'train',
         '--model_dir=%s' % (tmp_path / 'model')] + list(args),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        universal_newlines=True, timeout=240, cwd=str(tmp_path))
  ok = command(*TINY)
  assert ok.returncode == 0, ok.stderr
  assert 'global step 60' in ok.stdout
  bad = command(*(TINY + ['--gin_param=experiment.nope = 1']))
  assert bad.returncode == main_lib.EXIT_CONFIG_ERROR
  assert "parameter named 'nope'" in bad.stderr


def run_mode(mode, model_dir, *args):
  gin.clear_config()
  return main_lib.main([mode, '--model_dir=%s' % model_dir] + list(args))


def test_evaluate_mode_reports_held_out_accuracy(tmp_path, capsys):
  assert run_mode('evaluate', tmp_path, *TINY) == main_lib.EXIT_CONFIG_ERROR
  assert 'holds no checkpoint to evaluate' in capsys.readouterr().err
  assert run_main(tmp_path, *TINY) == 0
  capsys.readouterr()
  assert run_mode('evaluate', tmp_path, *TINY) == 0
  out = capsys.readouterr().out
  assert 'Evaluated %s at global step 60: accuracy 0.' % tmp_path in out
  assert read_scalars(tmp_path / 'eval')['accuracy'][60] > 0.5
  # Evaluation keeps its config in the .gin file: no event file of its own
  # in model_dir, and its results in eval/'s one file.
  assert len(_event_files(tmp_path)) == 1
  assert len(_event_files(tmp_path / 'eval')) == 1
  assert os.path.exists(str(tmp_path / 'operative_config-60.gin'))


def test_predict_mode_writes_every_held_out_example(tmp_path, capsys):
  import json
  assert run_main(tmp_path, *TINY) == 0
  assert run_mode('predict', tmp_path, *TINY) == 0
  assert 'Predicted 297 held-out examples' in capsys.readouterr().out
  assert len(_event_files(tmp_path)) == 1
  assert os.path.exists(str(tmp_path / 'operative_config-60.gin'))
  with open(str(tmp_path / 'predictions-60.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  assert len(rows) == 297
  assert all(0 <= row['class'] < 10 for row in rows)
  assert len(rows[0]['probabilities']) == 10


def test_train_and_evaluate_mode_evaluates_every_n_steps(tmp_path, capsys):
  assert run_mode('train_and_evaluate', tmp_path, *(TINY + [
      '--gin_param=experiment.eval_every_steps = 20'])) == 0
  out = capsys.readouterr().out
  for step in (20, 40, 60):
    assert 'eval at step %d: accuracy' % step in out
  assert sorted(read_scalars(tmp_path / 'eval')['accuracy']) == [20, 40, 60]
  assert len(_event_files(tmp_path)) == 1
  assert 'TRAIN_STEPS = 60' in text_summaries(tmp_path)[
      ('gin/operative_config', 0)]
  assert run_mode('train_and_evaluate', tmp_path, *(TINY + [
      '--gin_param=experiment.eval_every_steps = None'])) == (
          main_lib.EXIT_CONFIG_ERROR)
  assert 'needs experiment.eval_every_steps' in capsys.readouterr().err
