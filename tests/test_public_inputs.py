"""Input written the way public TPUEstimator programs write it (with
Keras and tf.compat.v1.layers layers named by default, on the lines whose
layers name variables per graph): features
alone (BERT's run_classifier: a dict holding 'label_ids', no labels),
tensors from an iterator's get_next() instead of a Dataset, a model_fn
without `labels`, batches without drop_remainder. Each runs with
use_tpu=False (one replica) and use_tpu=True (several CPU replicas), and
gives the numbers of TensorFlow's own TPUEstimator (use_tpu=False) where
it is installed."""
import logging
import re
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

import hookestimator as he
from hookestimator import tpu
from hookestimator import compat
from tests.conftest import framework_threads, requires_estimator

v1 = tf.compat.v1
NUM_EXAMPLES = 64
BATCH = 16
# Not a multiple of BATCH: the last evaluation batch is short (12 rows,
# which two replicas split into 8 real rows and 4 real + 4 padding).
EVAL_EXAMPLES = 44
SHARDS = 2


# Keras 2 and tf.compat.v1.layers name their variables per graph; Keras 3
# (TF 2.16+) numbers default names across the process, so there the layers
# are variable scopes with default names.
HAS_GRAPH_NAMED_LAYERS = compat.TF_VERSION < (2, 16)


def _normal(seed):
  return v1.truncated_normal_initializer(stddev=0.5, seed=seed)


def _dense(x, units, seed, activation=None):
  """A dense layer named as public programs name theirs: by default."""
  if HAS_GRAPH_NAMED_LAYERS and seed % 2:
    return tf.keras.layers.Dense(
        units, activation=activation,
        kernel_initializer=tf.keras.initializers.TruncatedNormal(
            stddev=0.5, seed=seed))(x)
  if HAS_GRAPH_NAMED_LAYERS:
    return v1.layers.dense(x, units, activation=activation,
                           kernel_initializer=_normal(seed))
  with v1.variable_scope(None, default_name='dense'):
    kernel = v1.get_variable('kernel', [x.shape[-1], units],
                             initializer=_normal(seed))
    bias = v1.get_variable('bias', [units], initializer=v1.zeros_initializer())
    y = tf.matmul(x, kernel) + bias
    return y if activation is None else activation(y)


def encoder(x):
  with v1.variable_scope(None, default_name='bert'):
    w = v1.get_variable('w', [4, 8], initializer=_normal(1))
    h = tf.nn.relu(tf.matmul(x, w))
  h = _dense(h, 8, seed=2, activation=tf.nn.relu)
  return _dense(h, 2, seed=3)


def _examples(seed, count=NUM_EXAMPLES):
  rng = np.random.RandomState(seed)
  x = rng.randn(count, 4).astype(np.float32)
  y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
  return x, y


# input_fns: features alone, as BERT's run_classifier builds them.

def features_alone_train_input_fn(params):
  x, y = _examples(0)
  return tf.data.Dataset.from_tensor_slices({
      'x': x, 'label_ids': y}).repeat().batch(params['batch_size'],
                                              drop_remainder=True)


def features_alone_eval_input_fn(params, drop_remainder=True):
  x, y = _examples(1, EVAL_EXAMPLES)
  return tf.data.Dataset.from_tensor_slices({
      'x': x, 'label_ids': y}).batch(params['batch_size'],
                                     drop_remainder=drop_remainder)


def features_alone_predict_input_fn(params):
  x, y = _examples(2, BATCH)
  return tf.data.Dataset.from_tensor_slices({
      'x': x, 'label_ids': y}).batch(params['batch_size'],
                                     drop_remainder=True)


def metric_fn(label_ids, logits):
  return {'accuracy': v1.metrics.accuracy(label_ids, tf.argmax(logits, 1))}


def bert_style_model_fn(module=tpu):
  """run_classifier's model_fn, returning `module`'s TPUEstimatorSpec: the
  labels come in the features."""
  def model_fn(features, labels, mode, params):
    del labels  # None: the input has none.
    label_ids = features['label_ids']
    logits = encoder(features['x'])
    if mode == tpu.ModeKeys.PREDICT:  # The mode strings are TF's own.
      return module.TPUEstimatorSpec(mode, predictions={'logits': logits})
    loss = v1.losses.sparse_softmax_cross_entropy(label_ids, logits)
    optimizer = v1.train.GradientDescentOptimizer(0.5)
    if params['use_tpu']:
      optimizer = v1.tpu.CrossShardOptimizer(optimizer)
    train_op = optimizer.minimize(loss, v1.train.get_global_step())
    return module.TPUEstimatorSpec(
        mode, loss=loss, train_op=train_op,
        eval_metrics=(metric_fn, [label_ids, logits]))
  return model_fn


def model_fn_without_labels(module=tpu):
  """A model_fn that takes no `labels` at all: Estimator allows it."""
  with_labels = bert_style_model_fn(module)

  def model_fn(features, mode, params):
    return with_labels(features, None, mode, params)
  return model_fn


def make_estimator(module, model_dir, use_tpu, model_fn, shards=SHARDS,
                   iterations_per_loop=2):
  config = module.RunConfig(
      model_dir=str(model_dir), save_checkpoints_steps=1000,
      tpu_config=module.TPUConfig(iterations_per_loop=iterations_per_loop,
                                  num_shards=shards))
  return module.TPUEstimator(
      model_fn=model_fn, config=config, use_tpu=use_tpu,
      train_batch_size=BATCH, eval_batch_size=BATCH, predict_batch_size=BATCH)


def run(module, model_dir, use_tpu, model_fn=bert_style_model_fn,
        train_input_fn=features_alone_train_input_fn,
        eval_input_fn=features_alone_eval_input_fn,
        predict_input_fn=features_alone_predict_input_fn, steps=4):
  """Trains, evaluates and predicts; returns (eval results, predictions)."""
  estimator = make_estimator(module, model_dir, use_tpu, model_fn(module))
  estimator.train(train_input_fn, max_steps=steps)
  results = estimator.evaluate(eval_input_fn)
  predictions = [p['logits'] for p in estimator.predict(predict_input_fn)]
  return results, np.stack(predictions)


def assert_same(results, predictions, expected, expected_predictions,
                keys=('loss', 'accuracy')):
  assert results['global_step'] == expected['global_step']
  for key in keys:
    np.testing.assert_allclose(results[key], expected[key], rtol=1e-5,
                               atol=1e-6, err_msg=key)
  np.testing.assert_allclose(predictions, expected_predictions, rtol=1e-5,
                             atol=1e-6)


# 1. Features alone.

@pytest.mark.timeout(600)
def test_features_alone_train_evaluate_and_predict_in_every_replica(
    tmp_path):
  one, one_predictions = run(tpu, tmp_path / 'one', False)
  many, many_predictions = run(tpu, tmp_path / 'many', True)
  assert one['global_step'] == 4
  assert_same(many, many_predictions, one, one_predictions)


@pytest.mark.timeout(600)
@pytest.mark.parametrize('feeding', ['in_loop', 'infeed_thread'])
def test_a_single_features_tensor_feeds_every_path(tmp_path, feeding):
  """The element is one tensor: features, no labels, in either feeding
  path; model_fn gets labels=None."""
  seen = []

  def model_fn(features, labels, mode, params):
    seen.append(labels)
    label_ids = tf.cast(features[:, 4], tf.int64)
    return bert_style_model_fn()({'x': features[:, :4],
                                  'label_ids': label_ids},
                                 labels, mode, dict(params, use_tpu=False))

  def input_fn(params):
    x, y = _examples(0)
    both = np.concatenate([x, y[:, None].astype(np.float32)], 1)
    return tf.data.Dataset.from_tensor_slices(both).repeat().batch(
        params['batch_size'], drop_remainder=True)

  est = he.HookEstimator(model_fn, he.RunConfig(
      model_dir=str(tmp_path), feeding=feeding, iterations_per_loop=2,
      save_checkpoints_steps=1000), train_batch_size=BATCH)
  est.train(input_fn, steps=3)
  assert est.checkpoint_step() == 3
  assert seen == [None]
  assert framework_threads() == []


@requires_estimator
@pytest.mark.timeout(600)
def test_features_alone_give_stock_numbers(tmp_path):
  stock = v1.estimator.tpu
  expected, expected_predictions = run(stock, tmp_path / 'stock', False)
  for use_tpu in (False, True):
    results, predictions = run(tpu, tmp_path / str(use_tpu), use_tpu)
    assert_same(results, predictions, expected, expected_predictions)


# 3. A model_fn without labels.

@pytest.mark.timeout(600)
def test_a_model_fn_without_labels_trains_evaluates_and_predicts(tmp_path):
  results, predictions = run(tpu, tmp_path / 'no_labels', True,
                             model_fn=model_fn_without_labels)
  expected, expected_predictions = run(tpu, tmp_path / 'labels', True)
  assert_same(results, predictions, expected, expected_predictions)


@requires_estimator
@pytest.mark.timeout(600)
def test_a_model_fn_without_labels_gives_stock_numbers_and_errors(tmp_path):
  stock = v1.estimator.tpu
  expected, expected_predictions = run(stock, tmp_path / 'stock', False,
                                       model_fn=model_fn_without_labels)
  results, predictions = run(tpu, tmp_path / 'ours', False,
                             model_fn=model_fn_without_labels)
  assert_same(results, predictions, expected, expected_predictions)

  def with_labels_input_fn(params):
    x, y = _examples(0)
    return tf.data.Dataset.from_tensor_slices(({'x': x, 'label_ids': y}, y)
                                              ).repeat().batch(
                                                  params['batch_size'],
                                                  drop_remainder=True)
  for module, name in ((stock, 'stock_refuses'), (tpu, 'refuses')):
    estimator = make_estimator(module, tmp_path / name, False,
                               model_fn_without_labels(module))
    with pytest.raises(ValueError, match='model_fn does not take labels, '
                       'but input_fn returns labels'
                       if module is stock else 'does not take labels, but '
                       'input_fn returns labels'):
      estimator.train(with_labels_input_fn, max_steps=2)


def _unexpected_args_model_fn(features, labels, mode, params, hparams):
  del features, labels, mode, params, hparams


def test_unexpected_arguments_are_refused_with_tpu_estimators_phrase(
    tmp_path):
  # TPUEstimator's own tests match this pattern.
  with pytest.raises(ValueError,
                     match='model_fn .* has following not expected args'):
    make_estimator(tpu, tmp_path, False, _unexpected_args_model_fn)


# 4a. Training batches without drop_remainder.

def unknown_batch_train_input_fn(params):
  """Batched without drop_remainder: the batch dimension is unknown, and
  every third batch is short (44 examples in batches of 16)."""
  x, y = _examples(0, EVAL_EXAMPLES)
  return tf.data.Dataset.from_tensor_slices(({'x': x}, y)).batch(
      params['batch_size']).repeat()


def labels_model_fn(module=tpu):
  """The same model with labels of their own."""
  with_features = bert_style_model_fn(module)

  def model_fn(features, labels, mode, params):
    return with_features(dict(features, label_ids=labels), None, mode,
                         params)
  return model_fn


def _train_loss(estimator, input_fn, steps):
  """Trains; returns the checkpoint's variables."""
  estimator.train(input_fn, max_steps=steps)
  path = estimator.latest_checkpoint()
  return {name: v1.train.load_variable(path, name)
          for name, _ in v1.train.list_variables(path)
          if not name.startswith(('input_position', 'hookestimator'))}


@pytest.mark.timeout(600)
def test_batches_without_drop_remainder_train_where_no_queue_needs_them(
    tmp_path):
  estimator = make_estimator(tpu, tmp_path / 'one', False,
                             labels_model_fn())
  assert estimator.config.feeding == 'in_loop'
  estimator.train(unknown_batch_train_input_fn, max_steps=6)
  assert estimator.checkpoint_step() == 6


@pytest.mark.parametrize('why, make', [
    ("2 replicas take equal shares of each step's input", lambda path: (
        make_estimator(tpu, path, True, labels_model_fn()))),
    ('the feeding queues need fully defined static shapes', lambda path: (
        he.HookEstimator(labels_model_fn(), he.RunConfig(
            model_dir=str(path), feeding='infeed_thread'),
                         train_batch_size=BATCH))),
], ids=['replicas', 'queue'])
def test_batches_without_drop_remainder_are_refused_where_a_queue_needs_them(
    tmp_path, why, make):
  estimator = make(tmp_path)
  with pytest.raises(ValueError, match=(
      r"features\['x'\] has shape \((\?|None), 4\); the features to the "
      r'model must have static shape here: ' + re.escape(why))) as raised:
    estimator.train(unknown_batch_train_input_fn, max_steps=2)
  # TPUEstimator's tests match these.
  assert re.search('features.*must have static', str(raised.value))

  def dynamic_labels_input_fn(params):
    x, y = _examples(0)
    return tf.data.Dataset.from_tensor_slices(({'x': x}, y)).batch(
        params['batch_size'], drop_remainder=True).map(
            lambda f, y: (f, tf.boolean_mask(y, y >= 0))).repeat()
  with pytest.raises(ValueError, match=(
      r'labels has shape \((\?|None),\); the labels to the model must have '
      r'static shape here: ' + re.escape(why))) as raised:
    estimator.train(dynamic_labels_input_fn, max_steps=2)
  assert re.search('labels.*must have static', str(raised.value))
  assert estimator.latest_checkpoint() is None
  assert framework_threads() == []


@requires_estimator
@pytest.mark.timeout(600)
def test_batches_without_drop_remainder_give_stock_numbers(tmp_path):
  stock = v1.estimator.tpu
  expected = _train_loss(make_estimator(stock, tmp_path / 'stock', False,
                                        labels_model_fn(stock)),
                         unknown_batch_train_input_fn, 6)
  got = _train_loss(make_estimator(tpu, tmp_path / 'ours', False,
                                   labels_model_fn()),
                    unknown_batch_train_input_fn, 6)
  model = sorted(name for name in expected if name != 'global_step')
  assert model and sorted(name for name in got if name != 'global_step') == (
      model)
  for name in expected:
    np.testing.assert_allclose(got[name], expected[name], rtol=1e-5,
                               atol=1e-6, err_msg=name)


def test_a_config_keeps_its_feeding_path_unless_the_device_changes(tmp_path):
  config = he.RunConfig(model_dir=str(tmp_path), feeding='infeed_thread')
  assert config.replace(device='cpu').feeding == 'infeed_thread'
  assert config.replace(device='cpu', cluster='').feeding == 'infeed_thread'
  assert config.replace(num_replicas=2).feeding == 'infeed_thread'
  # A new device takes its own default.
  assert config.replace(device='gpu').feeding == 'in_loop'
  # TPUEstimator places its model with replace(device=...): the path the
  # config asked for is the path it feeds through.
  estimator = tpu.TPUEstimator(model_fn=labels_model_fn(), config=config,
                               use_tpu=False, train_batch_size=BATCH)
  assert estimator.config.feeding == 'infeed_thread'
  with pytest.raises(ValueError, match='features.*must have static shape '
                     'here: the feeding queues need'):
    estimator.train(unknown_batch_train_input_fn, max_steps=2)


# 4b. A short last evaluation batch.

def short_batch_eval_input_fn(params):
  """BERT's eval input off a TPU: batched without drop_remainder, so the
  last of its batches (44 examples in batches of 16) holds 12."""
  return features_alone_eval_input_fn(params, drop_remainder=False)


def short_batch_predict_input_fn(params):
  x, y = _examples(2, EVAL_EXAMPLES)
  return tf.data.Dataset.from_tensor_slices({
      'x': x, 'label_ids': y}).batch(params['batch_size'])


@requires_estimator
@pytest.mark.timeout(600)
def test_a_short_last_batch_gives_stock_loss_metrics_and_predictions(
    tmp_path):
  stock = v1.estimator.tpu
  kwargs = dict(eval_input_fn=short_batch_eval_input_fn,
                predict_input_fn=short_batch_predict_input_fn)
  expected, expected_predictions = run(stock, tmp_path / 'stock', False,
                                       **kwargs)
  assert len(expected_predictions) == EVAL_EXAMPLES
  # One replica off a TPU runs the short batch as it is: the same loss
  # (the mean over the 3 batches), metrics and predictions.
  results, predictions = run(tpu, tmp_path / 'one', False, **kwargs)
  assert_same(results, predictions, expected, expected_predictions)
  # Several replicas pad it (each takes an equal share): the metrics and
  # predictions count only the real examples; the padding rows are in
  # model_fn's loss, as on a TPU.
  results, predictions = run(tpu, tmp_path / 'many', True, **kwargs)
  assert_same(results, predictions, expected, expected_predictions,
              keys=('accuracy',))
  assert not np.isclose(results['loss'], expected['loss'], rtol=1e-3)


@pytest.mark.timeout(600)
def test_model_fn_sees_a_short_batch_as_input_fn_made_it(tmp_path):
  """Off a TPU with one replica model_fn sees the short batch trimmed to
  its rows (unknown batch dimension, as input_fn's), with several
  replicas the padded batch (static)."""
  seen = {}

  def model_fn(features, labels, mode, params):
    spec = bert_style_model_fn()(features, labels, mode, params)
    if mode == tpu.ModeKeys.EVAL:
      seen.setdefault(params['use_tpu'], []).append(
          features['x'].shape.as_list())
      rows = tf.shape(features['x'])[0]
      return spec._replace(eval_metrics=(
          lambda label_ids, logits, rows: dict(
              metric_fn(label_ids, logits),
              min_rows=v1.metrics.mean(tf.reduce_min(rows)),
              mean_rows=v1.metrics.mean(tf.cast(rows, tf.float32))),
          [features['label_ids'], spec.eval_metrics[1][1],
           tf.fill(tf.shape(features['label_ids']), rows)]))
    return spec

  for use_tpu in (False, True):
    estimator = make_estimator(tpu, tmp_path / str(use_tpu), use_tpu,
                               model_fn, iterations_per_loop=4)
    estimator.train(features_alone_train_input_fn, max_steps=2)
    results = estimator.evaluate(short_batch_eval_input_fn)
    if use_tpu:
      assert seen[True] == [[BATCH // SHARDS, 4]] * SHARDS
      assert results['min_rows'] == BATCH // SHARDS
    else:
      assert seen[False] == [[None, 4]]
      # The last batch's 12 real rows ran as a batch of 12.
      assert results['min_rows'] == EVAL_EXAMPLES - 2 * BATCH == 12
      assert results['mean_rows'] == pytest.approx(
          (2 * BATCH * BATCH + 12 * 12) / EVAL_EXAMPLES)


# 2. input_fn returning tensors.

def as_tensors(dataset_input_fn):
  """The input_fn returning `dataset_input_fn`'s batches as tensors, from
  a one-shot iterator's get_next(), as TPUEstimator's own tests do."""
  def input_fn(params):
    dataset = dataset_input_fn(params)
    return v1.data.make_one_shot_iterator(dataset).get_next()
  input_fn.of_dataset = dataset_input_fn
  return input_fn


def pairs_train_input_fn(params):
  x, y = _examples(0)
  return tf.data.Dataset.from_tensor_slices(({'x': x}, y)).repeat().batch(
      params['batch_size'], drop_remainder=True)


def pairs_eval_input_fn(params):
  x, y = _examples(1, EVAL_EXAMPLES)
  return tf.data.Dataset.from_tensor_slices(({'x': x}, y)).batch(
      params['batch_size'])


TENSOR_INPUTS = {
    # (features, labels) pairs; the eval batches without drop_remainder.
    'pairs': dict(model_fn=labels_model_fn,
                  train_input_fn=as_tensors(pairs_train_input_fn),
                  eval_input_fn=as_tensors(pairs_eval_input_fn),
                  predict_input_fn=as_tensors(short_batch_predict_input_fn)),
    # Features alone, BERT's way.
    'features': dict(
        train_input_fn=as_tensors(features_alone_train_input_fn),
        eval_input_fn=as_tensors(short_batch_eval_input_fn),
        predict_input_fn=as_tensors(short_batch_predict_input_fn)),
}


@requires_estimator
@pytest.mark.timeout(600)
@pytest.mark.parametrize('kind', sorted(TENSOR_INPUTS))
def test_tensors_from_get_next_give_stock_numbers(tmp_path, kind):
  stock = v1.estimator.tpu
  kwargs = TENSOR_INPUTS[kind]
  expected, expected_predictions = run(stock, tmp_path / 'stock', False,
                                       **kwargs)
  assert len(expected_predictions) == EVAL_EXAMPLES
  results, predictions = run(tpu, tmp_path / 'one', False, **kwargs)
  assert_same(results, predictions, expected, expected_predictions)
  # Two replicas split each batch (PER_HOST_V1); the padding rows of the
  # short batch are in their loss.
  results, predictions = run(tpu, tmp_path / 'many', True, **kwargs)
  assert_same(results, predictions, expected, expected_predictions,
              keys=('accuracy',))


@pytest.mark.timeout(600)
@pytest.mark.parametrize('kind', sorted(TENSOR_INPUTS))
def test_tensors_give_the_numbers_of_the_same_dataset(tmp_path, kind):
  kwargs = TENSOR_INPUTS[kind]
  datasets = {name: fn.of_dataset for name, fn in kwargs.items()
              if name.endswith('input_fn')}
  model_fn = kwargs.get('model_fn', bert_style_model_fn)
  for use_tpu in (False, True):
    expected, expected_predictions = run(
        tpu, tmp_path / ('dataset%s' % use_tpu), use_tpu, model_fn=model_fn,
        **datasets)
    results, predictions = run(tpu, tmp_path / ('tensors%s' % use_tpu),
                               use_tpu, **kwargs)
    assert_same(results, predictions, expected, expected_predictions)


def _hook_estimator(model_dir, model_fn, **config):
  config.setdefault('save_checkpoints_steps', 1000)
  return he.HookEstimator(
      model_fn, he.RunConfig(model_dir=str(model_dir), **config),
      train_batch_size=BATCH, eval_batch_size=BATCH,
      predict_batch_size=BATCH)


@pytest.mark.timeout(600)
@pytest.mark.parametrize('feeding', ['in_loop', 'infeed_thread'])
def test_tensors_feed_replicas_with_batches_of_their_own(tmp_path, feeding):
  """Each replica its own batch (PER_HOST_V2): the tensors run once per
  replica a step, in the dataset's order, whatever the feeding path."""
  model_fn = labels_model_fn()
  got = {}
  for name, input_fn in (('dataset', pairs_train_input_fn),
                         ('tensors', as_tensors(pairs_train_input_fn))):
    estimator = _hook_estimator(tmp_path / name, lambda features, labels, mode,
                                params: model_fn(features, labels, mode,
                                                 dict(params, use_tpu=True)),
                                num_replicas=2, feeding=feeding)
    got[name] = _train_loss(estimator, input_fn, 4)
  assert sorted(got['tensors']) == sorted(got['dataset'])
  for name, value in got['dataset'].items():
    np.testing.assert_allclose(got['tensors'][name], value, rtol=1e-6,
                               err_msg=name)


def _finite_tensors(count, fail_at=None, drop_remainder=False):
  """input_fn of (features, labels) tensors from `count` examples; with
  `fail_at`, the batch holding example `fail_at` raises
  InvalidArgumentError 'input tensor failed'."""
  def input_fn(params):
    x, y = _examples(3, count)
    index = np.arange(count)
    dataset = tf.data.Dataset.from_tensor_slices(({'x': x}, y, index)).batch(
        params['batch_size'], drop_remainder=drop_remainder)
    features, labels, index = v1.data.make_one_shot_iterator(
        dataset).get_next()
    if fail_at is not None:
      ok = tf.debugging.Assert(tf.reduce_all(tf.not_equal(index, fail_at)),
                               ['input tensor failed'])
      with tf.control_dependencies([ok]):
        labels = tf.identity(labels)
    return features, labels
  return input_fn


@pytest.mark.timeout(300)
def test_the_end_of_tensor_input_ends_each_mode(tmp_path, caplog):
  estimator = make_estimator(tpu, tmp_path, False, labels_model_fn(),
                             iterations_per_loop=4)
  # 44 examples: 3 batches, the last of 12. Training stops after them.
  with caplog.at_level(logging.WARNING, logger='hookestimator'):
    estimator.train(_finite_tensors(EVAL_EXAMPLES), steps=100)
  assert estimator.checkpoint_step() == 3
  warnings = [r for r in caplog.records
              if 'position cannot be saved' in r.getMessage()]
  assert len(warnings) == 1, warnings
  assert 'input_fn returned tensors' in warnings[0].getMessage()
  caplog.clear()
  with caplog.at_level(logging.WARNING, logger='hookestimator'):
    results = estimator.evaluate(_finite_tensors(EVAL_EXAMPLES))
    predictions = list(estimator.predict(_finite_tensors(EVAL_EXAMPLES)))
  assert not [r for r in caplog.records
              if 'position cannot be saved' in r.getMessage()]
  assert results['global_step'] == 3
  assert len(predictions) == EVAL_EXAMPLES
  # Every example counted once: the accuracy is a multiple of 1/44.
  assert round(results['accuracy'] * EVAL_EXAMPLES, 4) == round(
      results['accuracy'] * EVAL_EXAMPLES)
  assert framework_threads() == []


@pytest.mark.timeout(300)
@pytest.mark.parametrize('use_tpu', [False, True])
@pytest.mark.parametrize('mode', ['train', 'evaluate', 'predict'])
def test_an_input_tensor_that_fails_reaches_the_caller(tmp_path, mode,
                                                       use_tpu):
  estimator = make_estimator(tpu, tmp_path, use_tpu, labels_model_fn(),
                             iterations_per_loop=2)
  if mode != 'train':
    estimator.train(pairs_train_input_fn, max_steps=2)
  failing = _finite_tensors(NUM_EXAMPLES, fail_at=40,  # The third batch.
                            drop_remainder=True)
  calls = {
      'train': lambda: estimator.train(failing, max_steps=100),
      'evaluate': lambda: estimator.evaluate(failing),
      'predict': lambda: list(estimator.predict(failing)),
  }
  start = time.monotonic()
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match='input tensor failed'):
    calls[mode]()
  assert time.monotonic() - start < 60
  assert framework_threads() == []
  assert not [t for t in threading.enumerate()
              if t.name.startswith(('InfeedController', 'OutfeedController'))]
  if mode == 'train':
    assert estimator.checkpoint_step() in (0, 2)


@pytest.mark.timeout(300)
def test_tensors_of_unknown_batch_train_with_one_replica_only(tmp_path):
  input_fn = as_tensors(unknown_batch_train_input_fn)
  estimator = make_estimator(tpu, tmp_path / 'one', False, labels_model_fn())
  estimator.train(input_fn, max_steps=5)
  assert estimator.checkpoint_step() == 5
  estimator = make_estimator(tpu, tmp_path / 'many', True, labels_model_fn())
  with pytest.raises(ValueError, match=(
      r"features\['x'\] has shape \((\?|None), 4\); the features to the "
      r"model must have static shape here: 2 replicas take equal shares")):
    estimator.train(input_fn, max_steps=5)
  assert framework_threads() == []


def test_train_and_evaluate_needs_a_dataset_to_evaluate_in_rounds(tmp_path):
  estimator = make_estimator(tpu, tmp_path, False, labels_model_fn())
  with pytest.raises(TypeError, match=(
      'eval_input_fn returned .*; train_and_evaluate evaluates inside the '
      'training graph, restarting the input for every round, which needs a '
      'tf.data.Dataset')):
    estimator.train_and_evaluate(pairs_train_input_fn,
                                 as_tensors(pairs_eval_input_fn),
                                 max_steps=4, eval_every_steps=2)
  assert estimator.latest_checkpoint() is None
  assert framework_threads() == []


@pytest.mark.parametrize('result, error, pattern', [
    (lambda params: 'data', TypeError,
     "input_fn must return a tf.data.Dataset, or tensors .* its features "
     "hold 'data'"),
    (lambda params: (tf.zeros([BATCH, 4]), tf.zeros([BATCH]),
                     tf.zeros([BATCH])), ValueError,
     r'input_fn should return \(features, labels\) as a len 2 tuple'),
    (lambda params: ({'x': tf.zeros([BATCH, 4])}, np.zeros(BATCH)),
     TypeError, 'its labels hold array'),
], ids=['string', 'triple', 'numpy-labels'])
def test_input_that_is_neither_a_dataset_nor_tensors_is_refused(
    tmp_path, result, error, pattern):
  estimator = make_estimator(tpu, tmp_path, False, labels_model_fn())
  with pytest.raises(error, match=pattern):
    estimator.train(result, max_steps=2)
  with pytest.raises(error, match=pattern):
    estimator.evaluate(result)
  assert estimator.latest_checkpoint() is None
