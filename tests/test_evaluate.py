"""evaluate(): metrics from outfed tensors equal numpy over the same data,
exactly once per example, with a short last batch padded and masked (and
run unpadded, one replica off a TPU); the loss the mean over batches."""
import os
import time

import numpy as np
import pytest
import tensorflow as tf

import hookestimator as he
from hookestimator.spec import ESTIMATOR_SPEC_TYPES
from tests import inference_models as models
from tests.conftest import StepRecorder, framework_threads, read_scalars

v1 = tf.compat.v1


@pytest.fixture(scope='module')
def est(tmp_path_factory):
  return models.trained(tmp_path_factory.mktemp('evaluate'))


def _expected(est, num_examples, batch_size, seed=0):
  x, y = models.data(num_examples, seed)
  logits = models.numpy_logits(est, x)
  predicted = logits.argmax(1)
  return {
      'accuracy': np.mean(predicted == y),
      'mean_logit': np.mean(logits[:, 1]),
      'positive_rate': np.mean(y),
      'precision': np.sum((predicted == 1) & (y == 1)) / np.sum(predicted == 1),
      'loss': models.numpy_loss(est, x, y, batch_size),
  }


@pytest.mark.parametrize('num_examples,iterations_per_loop', [
    (61, 3),    # 8 batches, the last of 5 examples; loops of 3
    (64, 4),    # whole batches ending on a loop boundary
    (5, 100),   # one short batch, a loop longer than the data
])
def test_metrics_equal_numpy_over_every_example_once(est, num_examples,
                                                     iterations_per_loop):
  config_est = he.HookEstimator(
      models.model_fn, est.config.replace(
          iterations_per_loop=iterations_per_loop), train_batch_size=8)
  results = config_est.evaluate(
      lambda params: models.dataset(num_examples, params['batch_size']))
  expected = _expected(est, num_examples, 8)
  assert sorted(results) == sorted(list(expected) + ['global_step'])
  for name, value in expected.items():
    assert results[name] == pytest.approx(value, rel=1e-5), name
  assert results['global_step'] == 12
  assert framework_threads() == []


def test_steps_limits_the_batches_and_loops_are_one_run_each(est):
  recorder = StepRecorder()
  results = est.evaluate(
      lambda params: models.dataset(200, params['batch_size']), steps=5,
      hooks=[recorder])
  expected = _expected(est, 40, 8)
  assert results['accuracy'] == pytest.approx(expected['accuracy'])
  assert results['loss'] == pytest.approx(expected['loss'], rel=1e-5)
  # Loops of 3 then 2 steps: one before_run/after_run each.
  assert recorder.calls == (['begin', 'after_create_session'] +
                            ['before_run', 'after_run'] * 2 + ['end'])
  # Evaluation does not move the global step.
  assert recorder.steps == [12, 12]


def test_steps_beyond_the_data_stop_at_its_end(est):
  results = est.evaluate(
      lambda params: models.dataset(20, params['batch_size']), steps=50)
  assert results['positive_rate'] == pytest.approx(
      _expected(est, 20, 8)['positive_rate'])


def test_dict_features_and_labels_without_drop_remainder(tmp_path):
  def model_fn(features, labels, mode, params):
    joined = tf.concat([features['a'], features['b']], axis=1)
    return models.model_fn(joined, labels['y'] if labels else None, mode,
                           params)

  def as_dicts(x, y):
    return {'a': x[:, :1], 'b': x[:, 1:]}, {'y': y}
  est = models.make(tmp_path, model=model_fn)
  est.train(lambda params: models.train_input_fn(params).map(as_dicts),
            steps=3)
  results = est.evaluate(
      lambda params: models.dataset(29, params['batch_size']).map(as_dicts))
  assert results['accuracy'] == pytest.approx(
      _expected(est, 29, 8)['accuracy'])


def test_summaries_go_to_the_eval_directory_at_the_global_step(tmp_path):
  est = models.trained(tmp_path)  # Evaluated once in each directory.
  est.evaluate(lambda params: models.dataset(16, params['batch_size']))
  est.evaluate(lambda params: models.dataset(16, params['batch_size']),
               name='holdout')
  for directory in ('eval', 'eval_holdout'):
    scalars = read_scalars(os.path.join(est.model_dir, directory))
    assert list(scalars['accuracy']) == [12]
    assert list(scalars['loss']) == [12]
    # As Estimator: the checkpoint evaluated, a string at the same step.
    assert _string_events(os.path.join(est.model_dir, directory)) == [
        ('checkpoint_path', 12, est.latest_checkpoint())]
  assert 'accuracy' not in read_scalars(est.model_dir)


def _string_events(directory):
  found = []
  for path in sorted(tf.io.gfile.glob(os.path.join(directory, 'events*'))):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.HasField('tensor') and value.tensor.dtype == tf.string:
          found.append((value.tag, event.step,
                        tf.make_ndarray(value.tensor).item().decode()))
  return found


def test_an_earlier_checkpoint_by_path(tmp_path):
  est = models.make(tmp_path, iterations_per_loop=2)
  est.train(models.train_input_fn, steps=2)
  first = est.latest_checkpoint()
  early = est.evaluate(lambda params: models.dataset(16, 8))
  est.train(models.train_input_fn, steps=4)
  again = est.evaluate(lambda params: models.dataset(16, 8),
                       checkpoint_path=first)
  assert again == early
  assert again['global_step'] == 2
  assert est.evaluate(lambda params: models.dataset(16, 8))[
      'global_step'] == 6


def test_without_a_checkpoint_evaluates_the_initial_variables(tmp_path):
  est = models.make(tmp_path)
  results = est.evaluate(lambda params: models.dataset(12, 8))
  assert results['global_step'] == 0
  # w = 0.1 everywhere, b = 0: both logits equal, argmax picks class 0.
  x, y = models.data(12)
  assert results['accuracy'] == pytest.approx(np.mean(y == 0))


def test_loss_only_and_metrics_only_specs(tmp_path):
  est = models.trained(tmp_path, steps=2)

  def loss_only(features, labels, mode, params):
    return models.model_fn(features, labels, mode, params)._replace(
        eval_metrics=None)

  def metrics_only(features, labels, mode, params):
    return models.model_fn(features, labels, mode, params)._replace(loss=None)
  data = lambda params: models.dataset(20, 8)  # pylint: disable=g-long-lambda
  for model_fn, keys in ((loss_only, ['global_step', 'loss']),
                         (metrics_only, ['accuracy', 'global_step',
                                         'mean_logit', 'positive_rate',
                                         'precision'])):
    other = he.HookEstimator(model_fn, est.config, train_batch_size=8)
    assert sorted(other.evaluate(data)) == keys


@pytest.mark.parametrize('estimator_spec', ESTIMATOR_SPEC_TYPES)
def test_plain_estimator_spec_with_loss_evaluates(tmp_path, estimator_spec):
  est = models.trained(tmp_path, steps=2)

  def model_fn(features, labels, mode, params):
    spec = models.model_fn(features, labels, mode, params)
    return estimator_spec(mode, loss=spec.loss)
  other = he.HookEstimator(model_fn, est.config, train_batch_size=8)
  results = other.evaluate(lambda params: models.dataset(24, 8))
  assert results['loss'] == pytest.approx(_expected(est, 24, 8)['loss'],
                                          rel=1e-5)


class Boom(Exception):
  pass


@pytest.mark.timeout(60)
def test_input_error_comes_out_with_its_type_and_no_thread_left(est):
  def failing(params):
    return models.failing_dataset(8, threshold=1.5)
  start = time.monotonic()
  with pytest.raises(tf.errors.InvalidArgumentError, match='eval input failed'):
    est.evaluate(failing)
  assert time.monotonic() - start < 30
  assert framework_threads() == []


@pytest.mark.timeout(60)
def test_a_batch_larger_than_the_batch_size_is_an_error(est):
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match='more rows than the batch size, 8'):
    est.evaluate(lambda params: models.dataset(30, 10))
  assert framework_threads() == []


@pytest.mark.timeout(60)
def test_a_failing_evaluation_hook_keeps_its_type(est):
  class FailingHook(v1.train.SessionRunHook):

    def after_run(self, run_context, run_values):
      raise Boom('eval hook failed')
  with pytest.raises(Boom, match='eval hook failed'):
    est.evaluate(lambda params: models.dataset(100, 8), hooks=[FailingHook()])
  assert framework_threads() == []


def _eval_spec_with(**changes):
  def model_fn(features, labels, mode, params):
    return models.model_fn(features, labels, mode, params)._replace(**changes)
  return model_fn


def _metric_fn_returning(result):
  def model_fn(features, labels, mode, params):
    spec = models.model_fn(features, labels, mode, params)
    return spec._replace(eval_metrics=(lambda labels: result(labels),
                                       [labels]))
  return model_fn


def _estimator_spec_with_a_vector_metric(features, labels, mode, params):
  spec = models.model_fn(features, labels, mode, params)
  return he.EstimatorSpec(mode, loss=spec.loss, eval_metric_ops={
      'acc': v1.metrics.accuracy(labels, labels),
      'vector': (tf.zeros([2]), tf.no_op())})


def _estimator_spec_with_a_reserved_name(features, labels, mode, params):
  spec = models.model_fn(features, labels, mode, params)
  return he.EstimatorSpec(mode, loss=spec.loss, eval_metric_ops={
      'global_step': v1.metrics.mean(spec.loss)})


def _scalar_metric_tensor(features, labels, mode, params):
  spec = models.model_fn(features, labels, mode, params)
  return spec._replace(eval_metrics=(
      lambda loss: {'mean_loss': v1.metrics.mean(loss)},
      [tf.reshape(spec.loss, [1])]))


@pytest.mark.parametrize('model_fn,error,match', [
    (_eval_spec_with(loss=None, eval_metrics=None), ValueError,
     'EVAL spec without loss and without eval_metrics'),
    (_estimator_spec_with_a_vector_metric, ValueError,
     r"eval_metric_ops\['vector'\] has the value .*; expected a scalar"),
    (_estimator_spec_with_a_reserved_name, ValueError,
     "eval_metric_ops has a metric named 'global_step'"),
    (_metric_fn_returning(lambda labels: [1]), TypeError,
     r'metric_fn returned \[1\]; expected a dict'),
    (_metric_fn_returning(lambda labels: {
        'global_step': v1.metrics.mean(labels)}), ValueError,
     "metric named 'global_step'"),
    (_metric_fn_returning(lambda labels: {'m': labels}), TypeError,
     r"for 'm'; expected a \(value, update_op\) pair"),
    (_scalar_metric_tensor, ValueError,
     r'eval_metrics tensor 0 .* has shape \(1,\); expected a leading batch '
     r'dimension equal to params\["batch_size"\] = 8 \(or unknown, as the '
     r'batch has it\)'),
    (_eval_spec_with(eval_metrics=(lambda a, b: {}, [])), ValueError,
     'eval_metrics fn .* does not take 0 positional'),
])
def test_bad_eval_specs_fail_before_any_step(est, model_fn, error, match):
  before = sorted(os.listdir(est.model_dir))
  other = he.HookEstimator(model_fn, est.config, train_batch_size=8)
  with pytest.raises(error, match=match):
    other.evaluate(lambda params: models.dataset(10, 8), name='bad')
  assert sorted(os.listdir(est.model_dir)) == before
  assert framework_threads() == []


@pytest.mark.parametrize('kwargs,error,match', [
    (dict(steps=0), ValueError, 'steps.*0'),
    (dict(steps=2.5), TypeError, 'steps.*2.5'),
    (dict(hooks=[3]), TypeError, 'SessionRunHook'),
    (dict(name=''), ValueError, 'name must be a non-empty string'),
    (dict(name='a/b'), ValueError, "name must be .*'a/b'"),
    (dict(checkpoint_path='/no/such/model.ckpt-3'), ValueError,
     '/no/such/model.ckpt-3 is not a checkpoint'),
    (dict(input_fn='data'), TypeError, 'input_fn must be callable'),
    (dict(input_fn=lambda params: tf.data.Dataset.zip((
        tf.data.Dataset.from_tensors(tf.zeros([9, 4])).repeat(),
        tf.data.Dataset.range(20).batch(8)))),
     ValueError, r'features has shape \(9, 4\) and cannot be padded: .*'
     r'needs a batch dimension equal to 8, or unknown'),
    (dict(input_fn=lambda params: 'data.csv'), TypeError,
     "must return a tf.data.Dataset, or tensors .*'data.csv'"),
])
def test_bad_arguments_fail_before_any_step(est, kwargs, error, match):
  before = sorted(os.listdir(est.model_dir))
  input_fn = kwargs.pop('input_fn', lambda params: models.dataset(10, 8))
  with pytest.raises(error, match=match):
    est.evaluate(input_fn, **kwargs)
  assert sorted(os.listdir(est.model_dir)) == before
  assert framework_threads() == []


def test_the_specs_evaluation_and_prediction_hooks_run(est):
  recorders = {'eval': StepRecorder(), 'infer': StepRecorder()}

  def model_fn(features, labels, mode, params):
    spec = models.model_fn(features, labels, mode, params)
    return spec._replace(evaluation_hooks=[recorders['eval']],
                         prediction_hooks=[recorders['infer']])
  other = he.HookEstimator(model_fn, est.config, train_batch_size=8)
  other.evaluate(lambda params: models.dataset(30, 8))
  list(other.predict(lambda params: models.dataset(30, 8)))
  # 4 batches and the batch past the end, in loops of 3: two runs each.
  for recorder in recorders.values():
    assert recorder.calls == (['begin', 'after_create_session'] +
                              ['before_run', 'after_run'] * 2 + ['end'])
