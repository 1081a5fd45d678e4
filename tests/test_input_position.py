"""The input position is saved with each checkpoint: train() continues the
data stream where the checkpoint left it, for the same input pipeline."""
import logging
import re

import numpy as np
import pytest
import tensorflow as tf

from hookestimator import input_position
from tests.faults import child as child_lib

v1 = tf.compat.v1


def _estimator(make_estimator, **config):
  config.setdefault('iterations_per_loop', 3)
  config.setdefault('save_checkpoints_steps', 3)
  return make_estimator(model_fn=child_lib.model_fn,
                        batch_size=child_lib.BATCH_SIZE, **config)


def _ids(est, steps):
  return est.get_variable_value('ids_by_step')[:steps]


@pytest.mark.parametrize('feeding', ['in_loop', 'infeed_thread'])
def test_train_continues_the_data_stream_where_it_stopped(make_estimator,
                                                          feeding):
  est = _estimator(make_estimator, feeding=feeding)
  est.train(child_lib.ids_input_fn, steps=7)
  est.train(child_lib.ids_input_fn, steps=8)
  np.testing.assert_array_equal(_ids(est, 15), child_lib.expected_ids(15))
  assert est.get_variable_names() == ['global_step', 'ids_by_step', 'w']


@pytest.mark.parametrize('feeding', ['in_loop', 'infeed_thread'])
def test_after_the_input_ended_the_next_train_starts_it_again(
    make_estimator, feeding):
  def one_epoch(params):
    return tf.data.Dataset.range(child_lib.NUM_IDS).map(
        lambda i: (i, i % 2)).batch(params['batch_size'], drop_remainder=True)
  est = _estimator(make_estimator, feeding=feeding)
  est.train(one_epoch)
  est.train(one_epoch)
  epoch = np.arange(child_lib.NUM_IDS).reshape([-1, child_lib.BATCH_SIZE])
  np.testing.assert_array_equal(_ids(est, 20), np.concatenate([epoch, epoch]))


def test_a_different_input_pipeline_starts_from_its_beginning(
    make_estimator, caplog):
  def other_input_fn(params):
    return tf.data.Dataset.range(100, 200).map(lambda i: (i % 40, i % 2)).batch(
        params['batch_size'], drop_remainder=True)
  est = _estimator(make_estimator)
  est.train(child_lib.ids_input_fn, steps=6)
  with caplog.at_level(logging.INFO, 'hookestimator'):
    est.train(other_input_fn, steps=3)
  assert 'position of a different input pipeline' in caplog.text
  np.testing.assert_array_equal(
      _ids(est, 9)[6:], (np.arange(100, 112) % 40).reshape([3, 4]))


def test_a_pipeline_that_cannot_be_saved_trains_and_says_so(make_estimator,
                                                             caplog):
  def random_input_fn(params):
    return tf.data.Dataset.range(10 ** 6).map(
        lambda i: (tf.random.uniform([], 0, 40, tf.int64), i % 2)).batch(
            params['batch_size'], drop_remainder=True)
  est = _estimator(make_estimator)
  with caplog.at_level(logging.WARNING, 'hookestimator'):
    est.train(random_input_fn, steps=3)
    est.train(random_input_fn, steps=3)
  assert 'input position cannot be saved' in caplog.text
  # The reason, not only the first line of TF 2's 'Graph execution error:'.
  assert re.search(r'cannot be saved with checkpoints \(RandomUniform\w* '
                   r'is stateful\.\)', caplog.text)
  assert est.get_variable_value('global_step') == 6


def test_fingerprint_names_the_pipeline_not_the_graph():
  def fingerprint(data, scale):
    with tf.Graph().as_default() as graph:
      dataset = tf.data.Dataset.from_tensor_slices(data).map(
          lambda x: x * scale).shuffle(4, seed=1)
      iterator = v1.data.make_initializable_iterator(dataset)
      return input_position.fingerprint(graph,
                                        iterator.initializer.inputs[0])
  same = fingerprint(np.arange(8.), 2.)
  assert fingerprint(np.arange(8.), 2.) == same
  assert fingerprint(np.arange(8.) + 1, 2.) != same
  assert fingerprint(np.arange(8.), 3.) != same


def test_fingerprint_counts_a_large_array_by_dtype_and_shape():
  def fingerprint(data):
    with tf.Graph().as_default() as graph:
      dataset = tf.data.Dataset.from_tensor_slices(data)
      iterator = v1.data.make_initializable_iterator(dataset)
      return input_position.fingerprint(graph,
                                        iterator.initializer.inputs[0])
  big = np.zeros([1000, 4], np.float32)
  same = fingerprint(big)
  # Over graph_structure.LARGE_CONSTANT_BYTES the values do not count...
  assert fingerprint(big + 1) == same
  # ... the dtype and shape do.
  assert fingerprint(np.zeros([1000, 5], np.float32)) != same
  assert fingerprint(np.zeros([1000, 4], np.float64)) != same
