"""ProgressHook: a bar on a terminal, log lines otherwise."""
import io
import logging

import pytest

from hookestimator.progress import ProgressHook
from tests.conftest import input_fn


class Terminal(io.StringIO):

  def isatty(self):
    return True


class FakeClock(object):

  def __init__(self):
    self.now = 0.0

  def __call__(self):
    self.now += 1.0  # one second per look at the clock
    return self.now


def test_bar_on_a_terminal_shows_steps_loss_speed(make_estimator):
  stream = Terminal()
  est = make_estimator(batch_size=4, iterations_per_loop=5)
  hook = ProgressHook(20, batch_size=4, stream=stream)
  est.train(input_fn, max_steps=20, hooks=[hook])
  text = stream.getvalue()
  assert '20/20' in text
  assert 'loss=' in text and 'examples/sec' in text
  assert hook.loss is not None


def test_log_lines_without_a_terminal_with_eta(make_estimator, caplog):
  stream = io.StringIO()
  est = make_estimator(batch_size=4, iterations_per_loop=5)
  hook = ProgressHook(20, batch_size=4, stream=stream, log_every_secs=3,
                      clock=FakeClock())
  with caplog.at_level(logging.INFO, logger='hookestimator.progress'):
    est.train(input_fn, max_steps=20, hooks=[hook])
  lines = [r.getMessage() for r in caplog.records
           if r.name == 'hookestimator.progress']
  assert stream.getvalue() == ''
  # Every look at the fake clock is one second: a line every third loop or
  # so, and always one at the end.
  assert 2 <= len(lines) < 4
  assert lines[-1].startswith('step 20/20 (100%), loss ')
  assert 'examples/sec, ETA 0m00s' in lines[-1]
  assert 'ETA' in lines[0] and 'ETA 0m00s' not in lines[0]
  assert len(set(lines)) == len(lines)  # the end does not repeat a line


def test_resumed_bar_starts_at_the_checkpoint(make_estimator):
  est = make_estimator(batch_size=4, iterations_per_loop=5)
  est.train(input_fn, max_steps=10)
  stream = Terminal()
  est.train(input_fn, max_steps=20,
            hooks=[ProgressHook(20, batch_size=4, stream=stream)])
  assert '10/20' in stream.getvalue() and '20/20' in stream.getvalue()


@pytest.mark.parametrize('kwargs', [dict(last_step=0, batch_size=1),
                                    dict(last_step=5, batch_size=-1),
                                    dict(last_step=5, batch_size=1,
                                         log_every_secs=0)])
def test_bad_arguments(kwargs):
  with pytest.raises(ValueError):
    ProgressHook(**kwargs)


def test_outside_a_training_loop_names_the_problem():
  import tensorflow as tf
  hook = ProgressHook(5, batch_size=1)
  with tf.Graph().as_default():
    with pytest.raises(ValueError, match='no hookestimator training loop'):
      hook.begin()


def test_end_does_not_repeat_the_last_line(make_estimator, caplog):
  est = make_estimator(batch_size=4, iterations_per_loop=5)
  hook = ProgressHook(20, batch_size=4, stream=io.StringIO(),
                      log_every_secs=1, clock=FakeClock())
  with caplog.at_level(logging.INFO, logger='hookestimator.progress'):
    est.train(input_fn, max_steps=20, hooks=[hook])
  lines = [r.getMessage() for r in caplog.records
           if r.name == 'hookestimator.progress']
  # One line per loop (the fake clock moves a second per look), none more.
  assert [line.split(' (')[0] for line in lines] == [
      'step 5/20', 'step 10/20', 'step 15/20', 'step 20/20']
