"""Fault injection: each fault hits a real small training in a subprocess
(tests/faults/child.py) under a hard timeout.

For every fault: the error or stop comes out within DEADLINE_SECS with its
original type and message, no framework thread is left alive, the feeding
queues are closed, and every checkpoint on disk loads. Signals stop at a
loop boundary with a checkpoint for that step and a distinct exit code;
SIGKILL, even in the middle of a checkpoint write, loses nothing a resumed
run cannot redo: it ends at exactly the step asked for, having read every
example exactly once per epoch.
"""
import json
import os
import queue
import random
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

from tests.faults import child as child_lib

v1 = tf.compat.v1
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
DEADLINE_SECS = 30
# A child imports TensorFlow (a few seconds) before it trains.
CHILD_TIMEOUT_SECS = 120


class Child(object):
  """A child training process whose `EVENT` lines are read as they come."""

  def __init__(self, *args):
    self.process = subprocess.Popen(
        [sys.executable, '-m', 'tests.faults.child'] + [str(a) for a in args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        universal_newlines=True)
    self._events = queue.Queue()
    self._stderr = []
    self._readers = [
        threading.Thread(target=self._read_events, daemon=True),
        threading.Thread(target=self._read_stderr, daemon=True)]
    for reader in self._readers:
      reader.start()

  def _read_events(self):
    for line in self.process.stdout:
      if line.startswith('EVENT '):
        self._events.put(json.loads(line[len('EVENT '):]))
    self._events.put(None)

  def _read_stderr(self):
    for line in self.process.stderr:
      self._stderr.append(line)

  @property
  def stderr(self):
    return ''.join(self._stderr)

  def next_event(self, timeout=CHILD_TIMEOUT_SECS):
    try:
      event = self._events.get(timeout=timeout)
    except queue.Empty:
      self.kill()
      pytest.fail('the child sent nothing for %d s; stderr:\n%s' %
                  (timeout, self.stderr[-3000:]))
    return event

  def wait_for(self, name, timeout=CHILD_TIMEOUT_SECS):
    deadline = time.monotonic() + timeout
    while True:
      event = self.next_event(max(deadline - time.monotonic(), 0.01))
      if event is None:
        pytest.fail('the child ended before %r; stderr:\n%s' %
                    (name, self.stderr[-3000:]))
      if event['event'] == name:
        return event

  def finish(self, timeout=CHILD_TIMEOUT_SECS):
    """Waits for the child to end; returns its exit code and events left."""
    try:
      code = self.process.wait(timeout)
    except subprocess.TimeoutExpired:
      self.kill()
      pytest.fail('the child did not end within %d s; stderr:\n%s' %
                  (timeout, self.stderr[-3000:]))
    for reader in self._readers:
      reader.join(10)
    events = []
    while not self._events.empty():
      event = self._events.get()
      if event is not None:
        events.append(event)
    return code, events

  def kill(self):
    if self.process.poll() is None:
      self.process.kill()
      self.process.wait()


def checkpoint_steps(model_dir):
  """Loads every tensor of every checkpoint the checkpoint state lists;
  returns their steps, and the latest checkpoint's step (None without one).

  A save cut short by SIGKILL may leave partial files behind; only the
  checkpoints the state file names have to load."""
  steps = []
  for prefix, step in child_lib.listed_checkpoints(model_dir):
    assert prefix.endswith('-%d' % step)
    steps.append(step)
  latest = v1.train.latest_checkpoint(model_dir)
  return sorted(steps), (None if latest is None else
                         int(v1.train.load_variable(latest, 'global_step')))


# Errors: one child runs each fault in a training of its own.

EXPECTED_ERRORS = {
    'input_error': ('InvalidArgumentError', r'input failed at batch\] \[7\]'),
    'model_error': ('InvalidArgumentError', r'model failed at step\] \[7\]'),
    'host_call_error': ('InvalidArgumentError',
                        r'host_call failed at step\] \[7\]'),
    'hook_error': ('HookFailure', r'^hook failed after run 4$'),
    'nan_loss': ('NanLossError', r'NaN or Inf at step 7\b'),
}


# Feeding path -> the queues a training has (the loop reading its input
# itself has no infeed queue).
QUEUES = {'in_loop': ['outfeed_queue'],
          'infeed_thread': ['infeed_queue', 'outfeed_queue']}


@pytest.fixture(scope='module', params=sorted(QUEUES))
def error_events(tmp_path_factory, request):
  model_dir = str(tmp_path_factory.mktemp('errors'))
  child = Child('errors', model_dir, '--feeding', request.param)
  code, events = child.finish()
  assert code == 0, child.stderr[-3000:]
  return model_dir, request.param, {event['case']: event for event in events}


@pytest.mark.timeout(200)
@pytest.mark.parametrize('case', sorted(EXPECTED_ERRORS))
def test_error_comes_out_with_its_type_and_message(error_events, case):
  model_dir, feeding, events = error_events
  event = events[case]
  error_type, message = EXPECTED_ERRORS[case]
  assert event['type'] == error_type, event
  assert re.search(message, event['message']), event
  assert event['seconds'] < DEADLINE_SECS
  assert event['threads'] == []
  closed = event['queues_closed']  # {queue name: closed}
  assert sorted(name.split('/')[-1] for name in closed) == QUEUES[feeding]
  assert all(closed.values()), closed
  steps, latest = checkpoint_steps(os.path.join(model_dir, case))
  assert latest == (steps[-1] if steps else None)
  if case in ('input_error', 'model_error', 'nan_loss'):
    # Nothing is saved past a step that failed. (The hook fails after the
    # loop to step 8, and host_call runs behind the device loop: steps up
    # to 8 trained, and their checkpoint is consistent.)
    assert steps and all(step < child_lib.FAULT_STEP for step in steps), steps


# Signals: the run stops at a loop boundary, saves it and exits with
# 128 + the signal number.

@pytest.mark.timeout(200)
@pytest.mark.parametrize('signal_number', [signal.SIGTERM, signal.SIGINT],
                         ids=['SIGTERM', 'SIGINT'])
def test_signal_stops_at_a_consistent_step_with_a_checkpoint(tmp_path,
                                                             signal_number):
  model_dir = str(tmp_path / 'model')
  iterations_per_loop = 5
  child = Child('train', model_dir, '--iterations-per-loop',
                iterations_per_loop, '--save-steps', 1000)
  assert child.wait_for('start')['step'] == 0
  child.wait_for('training')
  time.sleep(0.3)
  sent = time.monotonic()
  child.process.send_signal(signal_number)
  code, events = child.finish()
  assert time.monotonic() - sent < DEADLINE_SECS
  name = signal.Signals(signal_number).name
  assert code == 128 + signal_number, child.stderr[-3000:]
  (stop,) = [e for e in events if e['event'] == 'interrupted']
  assert stop['code'] == code
  assert stop['threads'] == []
  step = stop['step']
  assert step > 0 and step % iterations_per_loop == 0
  assert 'Training stopped by %s at step %d' % (name, step) in child.stderr
  assert stop['checkpoint'] == os.path.join(model_dir, 'model.ckpt-%d' % step)
  steps, latest = checkpoint_steps(model_dir)
  assert latest == step == steps[-1]
  ids = v1.train.load_variable(stop['checkpoint'], 'ids_by_step')
  recorded = min(step, child_lib.RECORDED_STEPS - 1)
  assert (ids[:recorded] == child_lib.expected_ids(recorded)).all()


# SIGKILL: the input position and the checkpoints survive.

@pytest.mark.timeout(300)
@pytest.mark.parametrize('feeding', sorted(QUEUES))
def test_sigkill_and_resume_reads_every_example_once_per_epoch(tmp_path,
                                                               feeding):
  model_dir = str(tmp_path / 'model')
  max_steps = 150  # 15 epochs of 10 steps
  args = ['train', model_dir, '--max-steps', max_steps,
          '--iterations-per-loop', 3, '--save-steps', 3,
          '--loop-sleep', 0.02, '--feeding', feeding]
  rng = random.Random(6)
  latest = None
  for _ in range(2):
    child = Child(*args)
    assert child.wait_for('start')['step'] == (latest or 0)
    child.wait_for('training')
    time.sleep(rng.uniform(0.05, 0.5))
    child.kill()
    steps, latest = checkpoint_steps(model_dir)
    assert 0 < latest < max_steps, 'killed too late to test a resume'
  child = Child(*args)
  assert child.wait_for('start')['step'] == latest
  code, events = child.finish()
  assert code == 0, child.stderr[-3000:]
  assert events[-1] == {'event': 'done', 'step': max_steps, 'threads': []}
  steps, latest = checkpoint_steps(model_dir)
  assert latest == max_steps
  ids = v1.train.load_variable(v1.train.latest_checkpoint(model_dir),
                               'ids_by_step')[:max_steps]
  np.testing.assert_array_equal(ids, child_lib.expected_ids(max_steps))
  per_epoch = ids.reshape([-1, child_lib.NUM_IDS])
  for epoch in per_epoch:
    assert sorted(epoch) == list(range(child_lib.NUM_IDS))


@pytest.mark.timeout(300)
def test_kill_during_a_checkpoint_write_resumes_from_the_previous(tmp_path):
  model_dir = str(tmp_path / 'model')
  max_steps = 12
  # 40 MB of variables: a write long enough to be caught in the middle.
  args = ['train', model_dir, '--max-steps', max_steps,
          '--iterations-per-loop', 2, '--save-steps', 2,
          '--ballast', 10 * 1000 * 1000]
  for _ in range(3):
    child = Child(*(args + ['--kill-during-write']))
    code, _ = child.finish()
    assert code == -signal.SIGKILL, child.stderr[-3000:]
    steps, latest = checkpoint_steps(model_dir)
    assert latest is not None and latest < max_steps
    interrupted = [n for n in os.listdir(model_dir) if '_temp' in n]
    if interrupted:
      break
  assert interrupted, 'no kill landed during a write in three tries'
  child = Child(*args)
  assert child.wait_for('start')['step'] == latest
  code, events = child.finish()
  assert code == 0, child.stderr[-3000:]
  assert events[-1]['step'] == max_steps
  steps, latest = checkpoint_steps(model_dir)
  assert latest == max_steps
  ids = v1.train.load_variable(v1.train.latest_checkpoint(model_dir),
                               'ids_by_step')[:max_steps]
  np.testing.assert_array_equal(ids, child_lib.expected_ids(max_steps))
