"""The runs use the thread pools device_feeds.session_pools makes: the device loop
on the loop pool, the feeding threads on the feeding pool, and both pools
are shared by every session of the process."""
import os
import threading

import pytest
import tensorflow as tf

from hookestimator import device_feeds
from tests import inference_models as models

v1 = tf.compat.v1


class RunSpy(object):
  """Records the inter-op pool of every session.run and callable call, by
  the thread that made it, and the pools of every session made."""

  def __init__(self, monkeypatch):
    self._lock = threading.Lock()
    self.runs = []  # (thread name, pool index or None, whether the loop)
    self.session_pools = []
    spy = self
    real_init = v1.Session.__init__
    real_run = v1.Session.run
    real_make_callable = v1.Session.make_callable

    def init(session, *args, **kwargs):
      config = kwargs.get('config', args[2] if len(args) > 2 else None)
      spy.session_pools.append([(p.num_threads, p.global_name) for p in (
          config.session_inter_op_thread_pool if config else ())])
      real_init(session, *args, **kwargs)

    def run(session, fetches, feed_dict=None, options=None,
            run_metadata=None):
      # MonitoredSession runs the caller's fetches under the key 'caller'.
      spy.record(options, isinstance(fetches, dict) and 'caller' in fetches)
      return real_run(session, fetches, feed_dict, options, run_metadata)

    def make_callable(session, fetches, feed_list=None,
                      accept_options=False):
      call = real_make_callable(session, fetches, feed_list, accept_options)

      def recorded(*args, **kwargs):
        spy.record(kwargs.get('options'), False)
        return call(*args, **kwargs)
      return recorded

    monkeypatch.setattr(v1.Session, '__init__', init)
    monkeypatch.setattr(v1.Session, 'run', run)
    monkeypatch.setattr(v1.Session, 'make_callable', make_callable)

  def record(self, options, loop):
    pool = options.inter_op_thread_pool if options is not None else None
    with self._lock:
      self.runs.append((threading.current_thread().name, pool, loop))

  def pools(self, thread, loop=None):
    """The pools `thread`'s runs used (only the loop's, or only the
    others', when `loop` is given)."""
    with self._lock:
      return {pool for name, pool, is_loop in self.runs
              if name == thread and loop in (None, is_loop)}


def _predict_input_fn(params):
  return models.dataset(20, params['batch_size'], labels=False)


def _eval_input_fn(params):
  return models.dataset(20, params['batch_size'])


CALLS = {
    'train': lambda est: est.train(models.train_input_fn, steps=9),
    'evaluate': lambda est: est.evaluate(_eval_input_fn),
    'predict': lambda est: list(est.predict(_predict_input_fn)),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize('feeding', ['in_loop', 'infeed_thread'])
@pytest.mark.parametrize('call', sorted(CALLS))
def test_the_loop_and_the_feeding_threads_run_on_their_pools(
    tmp_path, monkeypatch, call, feeding):
  est = models.trained(tmp_path, steps=3, feeding=feeding)
  config, loop_options, feeding_options = device_feeds.session_pools(None)
  loop_pool = loop_options.inter_op_thread_pool
  feeding_pool = feeding_options.inter_op_thread_pool
  assert len({0, loop_pool, feeding_pool}) == 3

  spy = RunSpy(monkeypatch)
  CALLS[call](est)
  assert spy.session_pools == [[
      (p.num_threads, p.global_name)
      for p in config.session_inter_op_thread_pool]]
  assert spy.pools('MainThread', loop=True) == {loop_pool}
  # The loop reading its input itself has no infeed thread.
  assert spy.pools('InfeedController') == (
      {feeding_pool} if feeding == 'infeed_thread' else set())
  assert spy.pools('OutfeedController') == {feeding_pool}


def _os_threads():
  return len(os.listdir('/proc/self/task'))


def _threads_a_second_session_adds(config=None, options=()):
  """How many OS threads a second open session adds, once each has run
  something with each of `options`."""
  counts = []
  with tf.Graph().as_default():
    total = tf.constant(1) + 1
    sessions = []
    try:
      for _ in range(2):
        sessions.append(v1.Session(config=config))
        for run_options in (None,) + tuple(options):
          sessions[-1].run(total, options=run_options)
        counts.append(_os_threads())
    finally:
      for session in sessions:
        session.close()
  return counts[1] - counts[0]


@pytest.mark.skipif(not os.path.isdir('/proc/self/task'),
                    reason='counts OS threads through /proc (Linux)')
def test_the_loop_and_feeding_pools_are_shared_by_every_session():
  """A pool per session would start and end its threads with every run;
  each new thread grows the process's memory (a malloc arena of its own)."""
  config, loop_options, feeding_options = device_feeds.session_pools(None)
  plain = _threads_a_second_session_adds()
  pooled = _threads_a_second_session_adds(config,
                                          [loop_options, feeding_options])
  assert pooled <= plain
  names = [p.global_name for p in config.session_inter_op_thread_pool]
  assert all(name.startswith(device_feeds.SHARED_POOL_PREFIX) for name in names)
