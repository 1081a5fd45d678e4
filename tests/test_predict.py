"""predict(): predictions through the outfeed equal a direct computation, in
input order, the short last batch sliced back; closing early leaves no
thread, and bad input fails at the call."""
import gc
import itertools
import time

import numpy as np
import pytest
import tensorflow as tf

import hookestimator as he
from tests import inference_models as models
from tests.conftest import StepRecorder, framework_threads

v1 = tf.compat.v1


@pytest.fixture(scope='module')
def est(tmp_path_factory):
  return models.trained(tmp_path_factory.mktemp('predict'))


def _softmax(logits):
  e = np.exp(logits - logits.max(axis=1, keepdims=True))
  return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize('num_examples,labels', [(21, False), (24, True),
                                                 (3, False)])
def test_predictions_equal_numpy_in_input_order(est, num_examples, labels):
  predictions = list(est.predict(
      lambda params: models.dataset(num_examples, params['batch_size'],
                                    labels=labels)))
  x, _ = models.data(num_examples)
  logits = models.numpy_logits(est, x)
  assert len(predictions) == num_examples
  np.testing.assert_allclose(np.stack([p['logits'] for p in predictions]),
                             logits, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
      np.stack([p['probabilities'] for p in predictions]), _softmax(logits),
      rtol=1e-5, atol=1e-6)
  assert [p['classes'] for p in predictions] == list(logits.argmax(1))
  assert framework_threads() == []


def test_batches_predict_keys_and_a_single_tensor(tmp_path, est):
  batches = list(est.predict(
      lambda params: models.dataset(21, params['batch_size']),
      predict_keys=['classes'], yield_single_examples=False))
  assert [sorted(b) for b in batches] == [['classes']] * 3
  assert [len(b['classes']) for b in batches] == [8, 8, 5]

  def single(features, labels, mode, params):
    return models.model_fn(features, labels, mode, params)._replace(
        predictions=tf.nn.relu(features))
  other = he.HookEstimator(single, est.config, train_batch_size=8,
                           predict_batch_size=4)
  rows = list(other.predict(lambda params: models.dataset(
      10, params['batch_size'], labels=False)))
  np.testing.assert_allclose(np.stack(rows),
                             np.maximum(models.data(10)[0], 0))


def test_hooks_see_one_run_per_loop(est):
  recorder = StepRecorder()
  # 2 batches, then the batch past the end, in loops of 3 steps: one loop.
  assert len(list(est.predict(lambda params: models.dataset(10, 8),
                              hooks=[recorder]))) == 10
  assert recorder.calls == ['begin', 'after_create_session', 'before_run',
                            'after_run', 'end']


@pytest.mark.timeout(60)
def test_closing_early_leaves_no_thread_and_predict_works_again(est):
  def input_fn(params):
    return models.dataset(1000, params['batch_size'])
  generator = est.predict(input_fn)
  first = list(itertools.islice(generator, 5))
  assert framework_threads() != []  # running, between loops
  generator.close()
  assert framework_threads() == []
  again = list(itertools.islice(est.predict(input_fn), 5))
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a['logits'], b['logits'])
  # islice dropped the second generator: closed when collected.
  gc.collect()
  assert framework_threads() == []


class ConsumerError(Exception):
  pass


@pytest.mark.timeout(60)
def test_an_error_in_the_consumer_ends_the_threads(est):
  def consume():
    for index, _ in enumerate(est.predict(
        lambda params: models.dataset(1000, params['batch_size']))):
      if index == 30:
        raise ConsumerError('consumer failed')
  with pytest.raises(ConsumerError):
    consume()
  gc.collect()
  assert framework_threads() == []
  assert len(list(est.predict(lambda params: models.dataset(9, 8)))) == 9


@pytest.mark.timeout(60)
def test_input_error_comes_out_with_its_type(est):
  def failing(params):
    def check(x):
      ok = tf.debugging.Assert(tf.reduce_all(x[:, 0] < 1.5),
                               ['predict input failed'])
      with tf.control_dependencies([ok]):
        return tf.identity(x)
    return models.dataset(500, 8, labels=False).map(check)
  start = time.monotonic()
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match='predict input failed'):
    list(est.predict(failing))
  assert time.monotonic() - start < 30
  assert framework_threads() == []


def _spec_with(**changes):
  def model_fn(features, labels, mode, params):
    return models.model_fn(features, labels, mode, params)._replace(**changes)
  return model_fn


def _dynamic_predictions(features, labels, mode, params):
  spec = models.model_fn(features, labels, mode, params)
  return spec._replace(predictions={
      'positive': tf.boolean_mask(features, features[:, 0] > 0)})


@pytest.mark.parametrize('model_fn,kwargs,error,match', [
    (_spec_with(predictions=None), {}, ValueError,
     'PREDICT spec without predictions'),
    (_dynamic_predictions, {}, ValueError,
     r"predictions\['positive'\].*static leading batch dimension"),
    (models.model_fn, dict(predict_keys=['logits', 'nope']), ValueError,
     r"predict_keys \['nope'\] are not among the predictions"),
    (models.model_fn, dict(predict_keys=3), TypeError, 'predict_keys'),
    (models.model_fn, dict(hooks=['hook']), TypeError, 'SessionRunHook'),
    (models.model_fn, dict(yield_single_examples='yes'), TypeError,
     'yield_single_examples'),
    (models.model_fn, dict(checkpoint_path='/no/such/ckpt'), ValueError,
     '/no/such/ckpt is not a checkpoint'),
])
def test_bad_input_fails_at_the_call(est, model_fn, kwargs, error, match):
  other = he.HookEstimator(model_fn, est.config, train_batch_size=8)
  with pytest.raises(error, match=match):
    other.predict(lambda params: models.dataset(16, 8, drop_remainder=True),
                  **kwargs)
  assert framework_threads() == []


def test_predictions_of_other_rows_than_a_trimmed_batch_fail_at_its_step(est):
  # One replica off a TPU runs a short batch unpadded: the batch dimension
  # is unknown, so a prediction with other rows is caught as it runs.
  other = he.HookEstimator(_dynamic_predictions, est.config,
                           train_batch_size=8)
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match='must have one row per example of its batch'):
    list(other.predict(lambda params: models.dataset(10, 8)))
  assert framework_threads() == []


def test_input_with_the_wrong_static_batch_fails_at_the_call(est):
  # Whole batches of 4 are fed as they are; the predictions then have 4
  # rows, not the batch size.
  with pytest.raises(ValueError, match=r"predictions\['classes'\] .* has "
                     r'shape \(4,\); expected a static leading batch '
                     r'dimension equal to params\["batch_size"\] = 8'):
    est.predict(lambda params: models.dataset(8, 4, drop_remainder=True))
  # Short batches are padded, which needs a batch axis in every component.
  with pytest.raises(ValueError, match=r'features has shape \(3,\) and '
                     r'cannot be padded'):
    est.predict(lambda params: tf.data.Dataset.zip((
        tf.data.Dataset.from_tensors(tf.zeros([3])).repeat(),
        tf.data.Dataset.range(20).batch(8))))
