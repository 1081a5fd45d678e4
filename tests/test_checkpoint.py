"""Checkpoints off the training thread: a consistent snapshot at the loop
boundary, written by a thread of its own, one write at a time, the last
one waited for by the end of train()."""
import os
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

from hookestimator import checkpoint as checkpoint_lib
from tests.conftest import framework_threads, input_fn, linear_model_fn
from tests.faults import child as child_lib

v1 = tf.compat.v1


class SlowSaves(object):
  """Wraps Saver.save: records each call's thread and times, after a
  pause (so that training goes on while a write is in flight); the
  `fail_on` call raises instead."""

  def __init__(self, monkeypatch, pause, fail_on=None):
    self.calls = []
    save = v1.train.Saver.save

    def slow_save(saver, *args, **kwargs):
      call = {'thread': threading.current_thread().name,
              'start': time.monotonic()}
      self.calls.append(call)
      time.sleep(pause)
      if len(self.calls) == fail_on:
        raise OSError(28, 'No space left on device (injected)')
      call['path'] = save(saver, *args, **kwargs)
      call['end'] = time.monotonic()
      return call['path']
    monkeypatch.setattr(v1.train.Saver, 'save', slow_save)


class LoopTimes(v1.train.SessionRunHook):

  def __init__(self):
    self.ends = []

  def after_run(self, run_context, run_values):
    self.ends.append(time.monotonic())


def _writer_threads():
  return [t for t in threading.enumerate()
          if t.name == checkpoint_lib.WRITER_THREAD_NAME]


@pytest.fixture(autouse=True)
def no_threads_left():
  yield
  assert framework_threads() == []
  assert _writer_threads() == []


@pytest.mark.timeout(120)
def test_saves_run_off_the_training_thread_one_at_a_time(make_estimator,
                                                          monkeypatch):
  saves = SlowSaves(monkeypatch, pause=0.3)
  loops = LoopTimes()
  est = make_estimator(iterations_per_loop=2, save_checkpoints_steps=2)
  est.train(input_fn, steps=8, hooks=[loops])
  assert [os.path.basename(c['path']) for c in saves.calls] == [
      'model.ckpt-%d' % step for step in (2, 4, 6, 8)]
  assert {c['thread'] for c in saves.calls} == {'CheckpointWriter'}
  for earlier, later in zip(saves.calls, saves.calls[1:]):
    assert later['start'] >= earlier['end']  # at most one write in flight
  # Training went on while a write was in flight.
  assert any(c['start'] < end < c['end'] for c in saves.calls
             for end in loops.ends)
  # train() returned after the last write.
  assert est.latest_checkpoint().endswith('model.ckpt-8')


@pytest.mark.timeout(120)
def test_each_checkpoint_holds_the_variables_of_its_own_step(make_estimator,
                                                             monkeypatch):
  """ids_by_step gets row `step` at each step: a checkpoint of step N has
  rows 0..N-1 and nothing after, although the write starts later."""
  SlowSaves(monkeypatch, pause=0.1)
  est = make_estimator(model_fn=child_lib.model_fn, iterations_per_loop=3,
                       save_checkpoints_steps=3, keep_checkpoint_max=0,
                       batch_size=child_lib.BATCH_SIZE)
  est.train(child_lib.ids_input_fn, steps=15)
  expected = child_lib.expected_ids(15)
  for step in (3, 6, 9, 12, 15):
    path = os.path.join(est.model_dir, 'model.ckpt-%d' % step)
    assert v1.train.load_variable(path, 'global_step') == step
    ids = v1.train.load_variable(path, 'ids_by_step')
    np.testing.assert_array_equal(ids[:step], expected[:step])
    assert not ids[step:].any(), 'checkpoint %d holds later steps' % step


@pytest.mark.timeout(120)
def test_a_failed_write_comes_out_of_train(make_estimator, monkeypatch):
  SlowSaves(monkeypatch, pause=0.0, fail_on=2)
  est = make_estimator(iterations_per_loop=2, save_checkpoints_steps=2)
  start = time.monotonic()
  with pytest.raises(OSError, match='No space left on device'):
    est.train(input_fn, steps=100)
  assert time.monotonic() - start < 30
  assert est.latest_checkpoint().endswith('model.ckpt-2')


@pytest.mark.timeout(120)
def test_a_model_with_its_own_saver_saves_on_the_training_thread(
    make_estimator, monkeypatch):
  saves = SlowSaves(monkeypatch, pause=0.0)

  def model_fn(features, labels, mode, params):
    spec = linear_model_fn(features, labels, mode, params)
    return spec._replace(scaffold_fn=lambda: v1.train.Scaffold(
        saver=v1.train.Saver(max_to_keep=3)))
  est = make_estimator(model_fn=model_fn, iterations_per_loop=2,
                       save_checkpoints_steps=2)
  est.train(input_fn, steps=4)
  assert [c['thread'] for c in saves.calls] == ['MainThread'] * 2
  assert est.get_variable_value('global_step') == 4


def test_keep_checkpoint_max_counts_checkpoints_of_earlier_runs(
    make_estimator):
  for _ in range(3):
    est = make_estimator(iterations_per_loop=2, save_checkpoints_steps=2,
                         keep_checkpoint_max=2)
    est.train(input_fn, steps=2)
  state = v1.train.get_checkpoint_state(est.model_dir)
  kept = [os.path.basename(p) for p in state.all_model_checkpoint_paths]
  assert kept == ['model.ckpt-4', 'model.ckpt-6']
  on_disk = sorted(n for n in os.listdir(est.model_dir) if n.endswith('.index'))
  assert on_disk == ['model.ckpt-4.index', 'model.ckpt-6.index']


def test_snapshot_copies_reference_and_resource_variables(tmp_path):
  """Values written are those at the snapshot, although both kinds of
  variable are updated in place before the write."""
  with tf.Graph().as_default():
    ref = v1.get_variable('ref', [2], initializer=v1.ones_initializer(),
                          use_resource=False)
    resource = v1.get_variable('resource', [3], use_resource=True,
                               initializer=v1.ones_initializer())
    update = tf.group(v1.assign_add(ref, [1., 1.]),
                      resource.assign_add([1., 1., 1.]))
    snapshot = checkpoint_lib.Snapshot(checkpoint_lib.DefaultSaver(0))
    with v1.Session() as session:
      session.run(v1.global_variables_initializer())
      session.run(update)
      snapshot.take(session)
      session.run(update)
      path = snapshot.saver.save(session, str(tmp_path / 'model.ckpt'),
                                 global_step=1, write_meta_graph=False)
  np.testing.assert_array_equal(v1.train.load_variable(path, 'ref'), [2, 2])
  np.testing.assert_array_equal(v1.train.load_variable(path, 'resource'),
                                [2, 2, 2])
