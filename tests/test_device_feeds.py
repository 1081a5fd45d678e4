"""The host infeed and outfeed queues and the enqueue loop."""
import numpy as np
import pytest
import tensorflow as tf

from hookestimator import device_feeds

v1 = tf.compat.v1


def _numbered_batches(num_batches, batch_size=2):
  """Batch i holds the value i in every element."""
  return tf.data.Dataset.range(num_batches).map(
      lambda i: (tf.fill([batch_size, 3], tf.cast(i, tf.float32)),
                 tf.fill([batch_size], i)))


def _run_with_timeout(session, fetches, millis=500):
  return session.run(fetches,
                     options=v1.RunOptions(timeout_in_ms=millis))


def test_one_run_enqueues_a_whole_loop_of_batches_in_order():
  with tf.Graph().as_default():
    infeed = device_feeds.HostInfeed(_numbered_batches(20))
    features, labels = infeed.dequeue()
    with v1.Session() as session:
      session.run(infeed.initializer)
      assert infeed.run_loop(session, 5) is True
      got = [int(session.run(labels)[0]) for _ in range(5)]
      assert got == [0, 1, 2, 3, 4]
      # Exactly five were enqueued: a sixth dequeue finds nothing.
      with pytest.raises(tf.errors.DeadlineExceededError):
        _run_with_timeout(session, labels)
      assert infeed.run_loop(session, 3) is True
      assert [int(session.run(labels)[0]) for _ in range(3)] == [5, 6, 7]
      assert features.shape.as_list() == [2, 3]


def test_end_of_input_keeps_every_enqueued_batch_then_closes():
  with tf.Graph().as_default():
    infeed = device_feeds.HostInfeed(_numbered_batches(4))
    _, labels = infeed.dequeue()
    with v1.Session() as session:
      session.run(infeed.initializer)
      assert infeed.run_loop(session, 3) is True
      assert infeed.run_loop(session, 3) is False  # only one batch was left
      got = [int(_run_with_timeout(session, labels)[0]) for _ in range(4)]
      assert got == [0, 1, 2, 3]
      with pytest.raises(tf.errors.OutOfRangeError):
        _run_with_timeout(session, labels)


def test_outfeed_gives_back_a_loop_in_step_order_and_drains_after_close():
  with tf.Graph().as_default():
    outfeed = device_feeds.HostOutfeed()
    step = v1.placeholder(tf.int64, [])
    values = v1.placeholder(tf.float32, [2])
    enqueue = outfeed.enqueue([step, values])
    outfeed.build_host_ops()
    with v1.Session() as session:
      for i in range(5):
        session.run(enqueue, {step: i, values: [i, -i]})
      steps, stacked = session.run(outfeed.dequeue_op, {outfeed.count: 3})
      assert list(steps) == [0, 1, 2]
      np.testing.assert_array_equal(stacked, [[0, 0], [1, -1], [2, -2]])
      session.run(outfeed.close_op)
      # A loop cut short: up to 10 asked, the 2 left come back.
      steps, _ = session.run(outfeed.dequeue_op, {outfeed.count: 10})
      assert list(steps) == [3, 4]
      with pytest.raises(tf.errors.OutOfRangeError):
        session.run(outfeed.dequeue_op, {outfeed.count: 1})


def _threads(config):
  return [p.num_threads for p in config.session_inter_op_thread_pool]


def test_session_pools_add_a_loop_and_a_feeding_pool_keeping_the_users():
  config, loop, feeding = device_feeds.session_pools(None)
  assert config.allow_soft_placement
  assert _threads(config) == [0, device_feeds.LOOP_POOL_THREADS,
                              device_feeds.FEEDING_POOL_THREADS]
  assert (loop.inter_op_thread_pool, feeding.inter_op_thread_pool) == (1, 2)

  user = v1.ConfigProto(inter_op_parallelism_threads=3,
                        intra_op_parallelism_threads=1,
                        log_device_placement=True)
  config, loop, feeding = device_feeds.session_pools(user)
  assert (config.intra_op_parallelism_threads,
          config.log_device_placement) == (1, True)
  # The user's inter-op setting sizes the first pool and the loop's.
  assert _threads(config) == [3, 3, device_feeds.FEEDING_POOL_THREADS]
  assert not user.session_inter_op_thread_pool  # the user's is not changed

  user.session_inter_op_thread_pool.add(num_threads=4)
  user.session_inter_op_thread_pool.add(num_threads=1)
  config, loop, feeding = device_feeds.session_pools(user)
  assert _threads(config) == [4, 1, 3, device_feeds.FEEDING_POOL_THREADS]
  assert (loop.inter_op_thread_pool, feeding.inter_op_thread_pool) == (2, 3)


def test_the_feeds_run_on_the_feeding_pool():
  with tf.Graph().as_default():
    infeed = device_feeds.HostInfeed(_numbered_batches(20))
    _, labels = infeed.dequeue()
    config, _, options = device_feeds.session_pools(None)
    infeed.run_options = options
    with v1.Session(config=config) as session:
      session.run(infeed.initializer)
      assert infeed.run_loop(session, 3) is True
      assert [int(session.run(labels)[0]) for _ in range(3)] == [0, 1, 2]
    # The options name a pool only that config has: elsewhere they fail.
    with v1.Session() as session:
      session.run(infeed.initializer)
      with pytest.raises(tf.errors.InvalidArgumentError):
        infeed.run_loop(session, 3)
