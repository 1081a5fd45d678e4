"""End-to-end trainings: loop sizes, resume, checkpoints, hooks, end of input."""
import os

import numpy as np
import pytest
import tensorflow as tf

import hookestimator as he
from hookestimator.spec import ESTIMATOR_SPEC_TYPES
from tests.conftest import (StepRecorder, dataset_of, framework_threads,
                            input_fn, linear_model_fn, read_scalars)

v1 = tf.compat.v1


@pytest.mark.parametrize('earlier,kwargs,expected', [
    (0, dict(steps=10), [4, 8, 10]),
    (3, dict(steps=10), [7, 11, 13]),
    (3, dict(max_steps=10), [7, 10]),
])
def test_loop_sizes_stop_at_exactly_the_requested_step(make_estimator, earlier,
                                                       kwargs, expected):
  if earlier:
    make_estimator(iterations_per_loop=earlier).train(input_fn, steps=earlier)
  est = make_estimator(iterations_per_loop=4)
  recorder = StepRecorder()
  est.train(input_fn, hooks=[recorder], **kwargs)
  assert recorder.steps == expected
  assert est.get_variable_value('global_step') == expected[-1]
  assert framework_threads() == []


def test_max_steps_reached_returns_at_once_without_running(make_estimator):
  est = make_estimator(iterations_per_loop=4)
  est.train(input_fn, max_steps=6)
  checkpoint = est.latest_checkpoint()
  recorder = StepRecorder()
  est.train(input_fn, max_steps=6, hooks=[recorder])
  est.train(input_fn, max_steps=2, hooks=[recorder])
  assert recorder.calls == []
  assert est.latest_checkpoint() == checkpoint


def test_one_session_run_per_loop_and_hook_call_counts(make_estimator):
  recorder = StepRecorder()
  spec_hook = StepRecorder()
  est = make_estimator(iterations_per_loop=3, params={'hooks': [spec_hook]})
  est.train(input_fn, steps=7, hooks=[recorder])
  for hook in (recorder, spec_hook):
    assert hook.calls == (['begin', 'after_create_session'] +
                          ['before_run', 'after_run'] * 3 + ['end'])
  assert recorder.steps == [3, 6, 7]


def test_request_stop_from_a_user_hook_stops_after_the_current_loop(
    make_estimator):
  recorder = StepRecorder(stop_after_runs=2)
  est = make_estimator(iterations_per_loop=5)
  est.train(input_fn, steps=100, hooks=[recorder])
  assert recorder.steps == [5, 10]
  assert est.get_variable_value('global_step') == 10
  assert est.latest_checkpoint().endswith('model.ckpt-10')


def test_resume_continues_from_the_latest_checkpoint(make_estimator):
  est = make_estimator(iterations_per_loop=2)
  est.train(input_fn, steps=4)
  weights = est.get_variable_value('w')
  assert np.abs(weights).sum() > 0
  # A new estimator on the same model_dir picks up step and weights.
  resumed = make_estimator(iterations_per_loop=2)
  recorder = StepRecorder()
  resumed.train(input_fn, steps=2, hooks=[recorder])
  assert recorder.steps == [6]
  assert not np.allclose(resumed.get_variable_value('w'), weights)


def test_trains_the_model(make_estimator):
  est = make_estimator(iterations_per_loop=50)
  est.train(input_fn, steps=200)
  w = est.get_variable_value('w')
  # Labels are sum(x) > 0: class 1's weights grow on every feature.
  assert np.all(w[:, 1] - w[:, 0] > 0.3)


def test_checkpoints_every_n_steps_at_loop_boundaries_and_keep_max(
    make_estimator):
  est = make_estimator(iterations_per_loop=2, save_checkpoints_steps=4,
                       keep_checkpoint_max=2)
  est.train(input_fn, steps=10)
  state = v1.train.get_checkpoint_state(est.model_dir)
  kept = [os.path.basename(p) for p in state.all_model_checkpoint_paths]
  assert kept == ['model.ckpt-8', 'model.ckpt-10']
  assert est.latest_checkpoint().endswith('model.ckpt-10')
  assert 'w' in est.get_variable_names()


@pytest.mark.parametrize('feeding', ['in_loop', 'infeed_thread'])
def test_end_of_input_stops_at_the_last_full_batch(make_estimator, feeding):
  # 100 examples in batches of 8: 12 full batches, the rest dropped.
  def finite_input_fn(params):
    return dataset_of(100, params['batch_size'], repeat=False)
  est = make_estimator(iterations_per_loop=5, feeding=feeding)
  recorder = StepRecorder()
  est.train(finite_input_fn, steps=1000, hooks=[recorder])
  assert est.get_variable_value('global_step') == 12
  assert est.latest_checkpoint().endswith('model.ckpt-12')
  assert recorder.steps == [5, 10]  # the cut-short third loop raised
  assert recorder.calls[-1] == 'end'
  # Every consumed step came back through the outfeed exactly once.
  assert sorted(read_scalars(est.model_dir)['loss']) == list(range(1, 13))
  assert framework_threads() == []


@pytest.mark.parametrize('feeding', ['in_loop', 'infeed_thread'])
def test_end_of_input_exactly_at_a_loop_boundary(make_estimator, feeding):
  def finite_input_fn(params):
    return dataset_of(80, params['batch_size'], repeat=False)
  est = make_estimator(iterations_per_loop=5, feeding=feeding)
  est.train(finite_input_fn)
  assert est.get_variable_value('global_step') == 10
  assert sorted(read_scalars(est.model_dir)['loss']) == list(range(1, 11))
  assert framework_threads() == []


def test_no_steps_and_no_max_steps_trains_until_input_ends(make_estimator):
  def finite_input_fn(params):
    return dataset_of(64, params['batch_size'], repeat=False)
  est = make_estimator(iterations_per_loop=3)
  est.train(finite_input_fn)
  assert est.get_variable_value('global_step') == 8


def _host_call_dict(loss, global_step):
  def fn(loss, step):
    return {'twice_loss': loss[0] * 2.0, 'step_copy': step[0]}
  return fn, [tf.reshape(loss, [1]), tf.reshape(global_step, [1])]


def test_host_call_dict_is_written_as_scalars_at_each_step(make_estimator):
  est = make_estimator(iterations_per_loop=4, log_step_count_steps=1,
                       params={'host_call': _host_call_dict})
  est.train(input_fn, steps=10)
  scalars = read_scalars(est.model_dir)
  assert sorted(scalars['twice_loss']) == list(range(10))
  for step in range(10):
    assert scalars['step_copy'][step] == step
    assert scalars['twice_loss'][step] == pytest.approx(
        2 * scalars['loss'][step + 1], rel=1e-6)
  # Per-loop throughput scalars at the step each loop ended.
  assert sorted(scalars['examples/sec']) == [4, 8, 10]
  assert sorted(scalars['global_step/sec']) == [4, 8, 10]


def test_short_loops_report_throughput_every_log_step_count_steps(
    make_estimator):
  est = make_estimator(iterations_per_loop=2, log_step_count_steps=5)
  est.train(input_fn, steps=13)
  scalars = read_scalars(est.model_dir)
  assert sorted(scalars['examples/sec']) == [6, 12]
  assert sorted(scalars['loss']) == list(range(1, 14))


def test_host_call_with_dict_tensors(make_estimator):
  def host_call(loss, global_step):
    def fn(step, value):
      return {'value': tf.reduce_mean(value) + tf.cast(step[0], tf.float32)}
    return fn, {'step': tf.reshape(global_step, [1]),
                'value': tf.fill([3], loss)}
  est = make_estimator(iterations_per_loop=3, params={'host_call': host_call})
  est.train(input_fn, steps=5)
  scalars = read_scalars(est.model_dir)
  for step in range(5):
    assert scalars['value'][step] == pytest.approx(
        scalars['loss'][step + 1] + step)


def test_host_call_building_its_own_summary_ops(make_estimator, tmp_path):
  """TPUEstimator-style: fn makes a tf.summary writer and ops; the
  framework runs them every step and flushes the writer."""
  logdir = str(tmp_path / 'host_summaries')

  def host_call(loss, global_step):
    def fn(step, loss):
      writer = tf.compat.v2.summary.create_file_writer(logdir)
      with writer.as_default(), tf.compat.v2.summary.record_if(True):
        return [tf.compat.v2.summary.scalar('own_loss', loss[0], step=step[0])]
    return fn, [tf.reshape(global_step, [1]), tf.reshape(loss, [1])]

  est = make_estimator(iterations_per_loop=4, params={'host_call': host_call})
  est.train(input_fn, steps=6)
  scalars = read_scalars(logdir)
  assert sorted(scalars['own_loss']) == list(range(6))
  loss = read_scalars(est.model_dir)['loss']
  for step in range(6):
    assert scalars['own_loss'][step] == pytest.approx(loss[step + 1],
                                                      rel=1e-6)


def test_host_call_returning_v1_summaries(make_estimator):
  def host_call(loss, global_step):
    def fn(loss):
      return v1.summary.scalar('v1_loss', loss[0])
    return fn, [tf.reshape(loss, [1])]
  est = make_estimator(iterations_per_loop=2, params={'host_call': host_call})
  est.train(input_fn, steps=3)
  assert sorted(read_scalars(est.model_dir)['v1_loss']) == [0, 1, 2]


@pytest.mark.parametrize('estimator_spec', ESTIMATOR_SPEC_TYPES)
def test_plain_estimator_spec_trains(make_estimator, estimator_spec):
  def model_fn(features, labels, mode):
    spec = linear_model_fn(features, labels, mode, {})
    return estimator_spec(mode=mode, loss=spec.loss, train_op=spec.train_op)
  est = make_estimator(model_fn=model_fn, iterations_per_loop=3)
  est.train(input_fn, steps=7)
  assert est.get_variable_value('global_step') == 7


def test_scaffold_fn_init_fn_runs(make_estimator):
  calls = []

  def model_fn(features, labels, mode, params):
    spec = linear_model_fn(features, labels, mode, params)
    return spec._replace(scaffold_fn=lambda: v1.train.Scaffold(
        init_fn=lambda scaffold, session: calls.append('init')))
  make_estimator(model_fn=model_fn).train(input_fn, steps=2)
  assert calls == ['init']


def test_params_reach_model_fn_and_input_fn(make_estimator):
  seen = {}

  def model_fn(features, labels, mode, params):
    seen['model'] = dict(params)
    return linear_model_fn(features, labels, mode, {})

  def my_input_fn(params):
    seen['input'] = dict(params)
    return input_fn(params)
  est = make_estimator(model_fn=model_fn, params={'lr': 0.5}, batch_size=4)
  est.train(my_input_fn, steps=1)
  assert seen['model'] == {'lr': 0.5, 'batch_size': 4}
  assert seen['input'] == {'lr': 0.5, 'batch_size': 4}
  assert est.params == {'lr': 0.5}


def test_model_dir_none_uses_a_temporary_directory():
  est = he.HookEstimator(linear_model_fn, he.RunConfig(iterations_per_loop=2),
                         train_batch_size=8)
  est.train(input_fn, steps=2)
  assert os.path.isdir(est.model_dir)
  assert est.latest_checkpoint().startswith(est.model_dir)


def test_latest_checkpoint_none_and_variables_need_a_checkpoint(
    make_estimator):
  est = make_estimator()
  assert est.latest_checkpoint() is None
  with pytest.raises(ValueError, match='no checkpoint'):
    est.get_variable_names()


def test_dict_features_and_labels(make_estimator):
  # Same-shaped components in each dict: each must reach model_fn under
  # its own key, which the sums host_call sends back per step show.
  def dict_input_fn(params):
    return dataset_of(64, params['batch_size']).map(
        lambda x, y: ({'left': x[:, :2], 'right': x[:, 2:]},
                      {'class': y, 'flipped': 1 - y}))

  def model_fn(features, labels, mode, params):
    joined = tf.concat([features['left'], features['right']], axis=1)
    spec = linear_model_fn(joined, labels['class'], mode, params)
    sums = [tf.reshape(tf.reduce_sum(tf.cast(t, tf.float32)), [1]) for t in (
        features['left'], features['right'], labels['class'],
        labels['flipped'])]
    return spec._replace(host_call=(
        lambda left, right, label, flipped: {
            'sum/left': left[0], 'sum/right': right[0],
            'sum/class': label[0], 'sum/flipped': flipped[0]}, sums))
  est = make_estimator(model_fn=model_fn, iterations_per_loop=3)
  est.train(dict_input_fn, steps=10)
  assert est.get_variable_value('global_step') == 10
  rng = np.random.RandomState(0)  # dataset_of's examples, 8 batches of 8
  x = rng.randn(64, 4).astype(np.float32).reshape(8, 8, 4)
  y = (x.sum(axis=2) > 0).astype(np.float32)
  expected = {'sum/left': x[:, :, :2].sum(axis=(1, 2)),
              'sum/right': x[:, :, 2:].sum(axis=(1, 2)),
              'sum/class': y.sum(axis=1), 'sum/flipped': (1 - y).sum(axis=1)}
  scalars = read_scalars(est.model_dir)
  for tag, batch_sums in expected.items():
    assert sorted(scalars[tag]) == list(range(10))
    for step, value in scalars[tag].items():
      assert value == pytest.approx(batch_sums[step % 8], abs=1e-4), (
          tag, step)


def test_a_dynamic_shape_names_the_dict_component(make_estimator):
  def dict_input_fn(params):
    return dataset_of(64, params['batch_size']).map(
        lambda x, y: ({'left': x[:, :2],
                       'right': tf.boolean_mask(x[:, 2:], x[:, 0] > 0)}, y))
  est = make_estimator(iterations_per_loop=3, feeding='infeed_thread')
  with pytest.raises(ValueError, match=r"features\['right'\] has shape "
                     r"\((\?|None), 2\); the features to the model must "
                     r"have static shape here: the feeding queues need fully"):
    est.train(dict_input_fn, steps=5)


def test_checkpoints_every_n_seconds_at_loop_boundaries(make_estimator):
  # An interval shorter than any loop: a checkpoint at every loop boundary.
  est = make_estimator(iterations_per_loop=2, save_checkpoints_steps=None,
                       save_checkpoints_secs=1e-6)
  est.train(input_fn, steps=6)
  state = v1.train.get_checkpoint_state(est.model_dir)
  kept = [os.path.basename(p) for p in state.all_model_checkpoint_paths]
  assert kept == ['model.ckpt-2', 'model.ckpt-4', 'model.ckpt-6']
