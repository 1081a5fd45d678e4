"""Models written the way public TPUEstimator programs write them: Keras and
tf.compat.v1.layers layers with default names, variable_scope(None,
default_name=...), feature dicts, init_from_checkpoint and tables inside
model_fn, scaffold_fn. Each runs with use_tpu=False (one replica) and
use_tpu=True (several CPU replicas), and gives the numbers of TensorFlow's
own TPUEstimator (use_tpu=False) where it is installed."""
import numpy as np
import pytest
import tensorflow as tf

from hookestimator import compat
from hookestimator import tpu
from tests.conftest import requires_estimator

v1 = tf.compat.v1
# tf.compat.v1.layers and graph-mode Keras layers need Keras 2 (TF < 2.16).
HAS_V1_LAYERS = compat.TF_VERSION < (2, 16)
NUM_EXAMPLES = 64
BATCH = 16


def _examples(seed):
  rng = np.random.RandomState(seed)
  x = rng.randn(NUM_EXAMPLES, 4).astype(np.float32)
  y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
  return x, y


def train_input_fn(params):
  x, y = _examples(0)
  return tf.data.Dataset.from_tensor_slices(({'x': x}, y)).repeat().batch(
      params['batch_size'], drop_remainder=True)


def eval_input_fn(params):
  x, y = _examples(1)
  return tf.data.Dataset.from_tensor_slices(({'x': x}, y)).batch(
      params['batch_size'], drop_remainder=True)


def predict_input_fn(params):
  x, _ = _examples(2)
  return tf.data.Dataset.from_tensor_slices({'x': x[:BATCH]}).batch(
      params['batch_size'], drop_remainder=True)


def _normal(seed):
  return v1.truncated_normal_initializer(stddev=0.5, seed=seed)


def encoder(x):
  """Layers named by default, as public programs name them. Keras 2 and
  tf.compat.v1.layers where the line has them (TF 2.16+ ships Keras 3,
  which numbers layers per process, not per graph, so no graph-mode
  estimator can restore them); a default-named scope elsewhere."""
  with v1.variable_scope(None, default_name='bert'):
    w = v1.get_variable('w', [4, 8], initializer=_normal(1))
    h = tf.nn.relu(tf.matmul(x, w))
  if not HAS_V1_LAYERS:
    with v1.variable_scope(None, default_name='dense'):
      kernel = v1.get_variable('kernel', [8, 2], initializer=_normal(3))
      bias = v1.get_variable('bias', [2], initializer=v1.zeros_initializer())
    return tf.matmul(h, kernel) + bias
  h = v1.layers.dense(h, 8, activation=tf.nn.relu,
                      kernel_initializer=_normal(2))
  return tf.keras.layers.Dense(
      2, kernel_initializer=tf.keras.initializers.TruncatedNormal(
          stddev=0.5, seed=3))(h)


def metric_fn(labels, logits):
  return {'accuracy': v1.metrics.accuracy(labels, tf.argmax(logits, 1))}


def make_model_fn(init_checkpoint=None, table=False, module=tpu):
  def model_fn(features, labels, mode, params):
    x = features['x']
    if table:
      # A lookup table built in model_fn, its initialiser run by the session.
      keys = tf.constant([0, 1], dtype=tf.int64)
      lookup = tf.lookup.StaticHashTable(
          tf.lookup.KeyValueTensorInitializer(keys, tf.constant([1.0, 2.0])),
          default_value=0.0)
      x = x * lookup.lookup(tf.ones_like(keys))[0]
    logits = encoder(x)
    scaffold_fn = None
    if init_checkpoint:
      # BERT's way: on a TPU through scaffold_fn, elsewhere inline.
      def init():
        v1.train.init_from_checkpoint(init_checkpoint, {'bert/': 'bert/'})
      if params['use_tpu']:
        def scaffold_fn():
          init()
          return v1.train.Scaffold()
      else:
        init()
    if mode == tpu.ModeKeys.PREDICT:
      return module.TPUEstimatorSpec(
          mode, predictions={'logits': logits}, scaffold_fn=scaffold_fn)
    loss = v1.losses.sparse_softmax_cross_entropy(labels, logits)
    optimizer = v1.train.GradientDescentOptimizer(params['learning_rate'])
    if params['use_tpu']:
      optimizer = v1.tpu.CrossShardOptimizer(optimizer)
    train_op = optimizer.minimize(loss, v1.train.get_global_step())
    return module.TPUEstimatorSpec(
        mode, loss=loss, train_op=train_op, scaffold_fn=scaffold_fn,
        eval_metrics=(metric_fn, [labels, logits]))
  return model_fn


def make_estimator(module, model_dir, use_tpu, model_fn, shards=8,
                   learning_rate=0.5):
  config = module.RunConfig(
      model_dir=str(model_dir), save_checkpoints_steps=1000,
      tpu_config=module.TPUConfig(iterations_per_loop=2, num_shards=shards))
  return module.TPUEstimator(
      model_fn=model_fn, config=config, use_tpu=use_tpu,
      train_batch_size=BATCH, eval_batch_size=BATCH, predict_batch_size=BATCH,
      params={'learning_rate': learning_rate})


def run(module, model_dir, use_tpu, model_fn=None, steps=4):
  """Trains, evaluates and predicts; returns (eval results, predictions,
  the checkpoint's variable names)."""
  estimator = make_estimator(module, model_dir, use_tpu,
                             model_fn or make_model_fn(module=module))
  estimator.train(train_input_fn, max_steps=steps)
  results = estimator.evaluate(eval_input_fn)
  predictions = [p['logits'] for p in estimator.predict(predict_input_fn)]
  names = sorted(name for name, _ in v1.train.list_variables(
      estimator.latest_checkpoint()) if not name.startswith('hookestimator/'))
  return results, np.stack(predictions), names


def _model_names(names):
  return [n for n in names if n.startswith(('bert', 'dense'))]


def test_default_named_layers_read_the_same_variables_in_every_replica(
    tmp_path):
  one, one_predictions, one_names = run(tpu, tmp_path / 'one', False)
  many, many_predictions, many_names = run(tpu, tmp_path / 'many', True)
  # Eight replicas and one train alike and read one set of variables,
  # named as in a graph of its own (no bert_1, dense_3 or loop prefix).
  assert many_names == one_names
  # As in a graph of the model alone: tf.layers' dense, then Keras' dense_1.
  expected = ['bert/w', 'dense/bias', 'dense/kernel']
  if HAS_V1_LAYERS:
    expected += ['dense_1/bias', 'dense_1/kernel']
  assert _model_names(one_names) == expected
  assert many['global_step'] == one['global_step'] == 4
  for key in ('loss', 'accuracy'):
    np.testing.assert_allclose(many[key], one[key], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(many_predictions, one_predictions, rtol=1e-5,
                             atol=1e-6)


@requires_estimator
def test_default_named_layers_give_stock_numbers(tmp_path):
  stock = v1.estimator.tpu
  expected, expected_predictions, expected_names = run(
      stock, tmp_path / 'stock', False)
  for use_tpu in (False, True):
    results, predictions, names = run(tpu, tmp_path / str(use_tpu), use_tpu)
    assert _model_names(names) == _model_names(expected_names)
    assert results['global_step'] == expected['global_step']
    for key in ('loss', 'accuracy'):
      np.testing.assert_allclose(results[key], expected[key], rtol=1e-5,
                                 atol=1e-6)
    np.testing.assert_allclose(predictions, expected_predictions, rtol=1e-5,
                               atol=1e-6)


def test_train_and_evaluate_rounds_and_export_read_the_trained_variables(
    tmp_path):
  estimator = make_estimator(tpu, tmp_path, True, make_model_fn(), shards=2)
  history = estimator.train_and_evaluate(train_input_fn, eval_input_fn,
                                         max_steps=4, eval_every_steps=2)
  assert [round_['global_step'] for round_ in history] == [2, 4]
  # The last round read the variables the checkpoint holds.
  again = estimator.evaluate(eval_input_fn)
  for key in ('loss', 'accuracy'):
    np.testing.assert_allclose(history[-1][key], again[key], rtol=1e-6)
  names = [n for n, _ in v1.train.list_variables(
      estimator.latest_checkpoint())]
  assert not [n for n in names if 'replica_' in n or 'loop' in n]

  def serving_input_fn():
    x = v1.placeholder(tf.float32, [None, 4])
    return tpu.export.ServingInputReceiver({'x': x}, {'x': x})
  export_dir = estimator.export_saved_model(str(tmp_path / 'export'),
                                            serving_input_fn)
  x, _ = _examples(2)
  with tf.Graph().as_default(), v1.Session() as session:
    meta = v1.saved_model.loader.load(session, ['serve'], export_dir)
    signature = meta.signature_def['serving_default']
    served = session.run(signature.outputs['logits'].name,
                         {signature.inputs['x'].name: x[:BATCH]})
  predicted = np.stack([p['logits'] for p in
                        estimator.predict(predict_input_fn)])
  np.testing.assert_allclose(served, predicted, rtol=1e-5, atol=1e-6)


def _save_bert_checkpoint(path):
  with tf.Graph().as_default():
    v1.get_variable('bert/w', [4, 8], initializer=v1.constant_initializer(
        np.arange(32, dtype=np.float32).reshape(4, 8) / 32.0))
    with v1.Session() as session:
      session.run(v1.global_variables_initializer())
      return v1.train.Saver().save(session, str(path / 'init' / 'bert'))


@pytest.mark.parametrize('use_tpu', [False, True])
def test_init_from_checkpoint_and_tables_inside_model_fn(tmp_path, use_tpu):
  checkpoint = _save_bert_checkpoint(tmp_path)
  estimator = make_estimator(
      tpu, tmp_path / 'model', use_tpu,
      # TF 1.x refuses a table made in any while_loop from constants made
      # there too (stock TPUEstimator's TPU loop alike): docs/fidelity.md.
      make_model_fn(init_checkpoint=checkpoint,
                    table=compat.TF_VERSION >= (2, 0)), shards=2,
      learning_rate=0.0)
  estimator.train(train_input_fn, max_steps=2)
  np.testing.assert_array_equal(estimator.get_variable_value('bert/w'),
                                v1.train.load_variable(checkpoint, 'bert/w'))
  results = estimator.evaluate(eval_input_fn, steps=2)
  assert results['global_step'] == 2
  assert len(list(estimator.predict(predict_input_fn))) == BATCH


def _cross_shard_spec(mode, labels, logits):
  loss = v1.losses.sparse_softmax_cross_entropy(labels, logits)
  optimizer = v1.tpu.CrossShardOptimizer(
      v1.train.GradientDescentOptimizer(0.1))
  return tpu.TPUEstimatorSpec(
      mode, loss=loss,
      train_op=optimizer.minimize(loss, v1.train.get_global_step()))


def test_a_replica_making_other_variables_is_named(tmp_path):
  replicas = []

  def model_fn(features, labels, mode, params):
    replicas.append(mode)
    shape = [4, 2] if len(replicas) == 1 else [4, 3]
    w = v1.get_variable('w', shape)
    return _cross_shard_spec(mode, labels,
                             tf.matmul(features['x'], w)[:, :2])
  estimator = make_estimator(tpu, tmp_path, True, model_fn, shards=2)
  with pytest.raises(ValueError, match=r'Replica 1 made its variable 0 as '
                     r'replica_1/w.*replica 0 made w \(shape \(4, 2\)'):
    estimator.train(train_input_fn, max_steps=2)


def _keras_functional_model_fn(op_on_inputs):
  """A Keras 2 functional model made inside model_fn from keras.Input, with
  the two inputs joined by `op_on_inputs`."""
  def model_fn(features, labels, mode, params):
    del params
    left, right = tf.keras.Input([4]), tf.keras.Input([4])
    joined = op_on_inputs(left, right)
    model = tf.keras.Model([left, right], tf.keras.layers.Dense(2)(joined))
    return _cross_shard_spec(mode, labels,
                             model([features['x'], features['x']]))
  return model_fn


@pytest.fixture
def v1_control_flow():
  """TF 1's while_loop, as programs that call disable_v2_behavior get it
  (TF 1.15 always has it)."""
  enabled = compat.TF_VERSION >= (2,) and v1.control_flow_v2_enabled()
  if enabled:
    v1.disable_control_flow_v2()
  try:
    yield
  finally:
    if enabled:
      v1.enable_control_flow_v2()


@pytest.mark.skipif(not HAS_V1_LAYERS, reason='needs graph-mode Keras 2')
# The thread method: a lock wait cannot be interrupted by a signal, so a
# regression ends the run with every thread's stack instead of hanging.
@pytest.mark.timeout(120, method='thread')
@pytest.mark.parametrize('use_tpu', [False, True])
def test_a_keras_op_on_keras_inputs_is_refused_naming_the_way_out(
    tmp_path, use_tpu, v1_control_flow):
  # Keras 2 evaluates tf.concat's constant axis with a session while the
  # loop body is built, under the graph's mutation lock TF 1's while_loop
  # holds: unguarded, this waits forever.
  concat = _keras_functional_model_fn(
      lambda a, b: tf.concat([a, b], axis=1))
  estimator = make_estimator(tpu, tmp_path / 'op', use_tpu, concat, shards=2)
  with pytest.raises(RuntimeError, match=r'keras.layers.Lambda'):
    estimator.train(train_input_fn, max_steps=2)
  assert estimator.latest_checkpoint() is None
  # The way out the error names trains.
  wrapped = _keras_functional_model_fn(
      lambda a, b: tf.keras.layers.Lambda(
          lambda pair: tf.concat(pair, axis=1))([a, b]))
  estimator = make_estimator(tpu, tmp_path / 'lambda', use_tpu, wrapped,
                             shards=2)
  estimator.train(train_input_fn, max_steps=2)
  assert estimator.get_variable_value('global_step') == 2


def _metric_ops_model_fn(module, spec_class=tpu.EstimatorSpec):
  """A head as an Estimator program writes it: a plain EstimatorSpec
  whose eval_metric_ops are tf.compat.v1.metrics pairs; one metric reads
  the global step, to show each evaluation starts its metrics afresh."""
  head = make_model_fn(module=module)

  def model_fn(features, labels, mode, params):
    spec = head(features, labels, mode, params)
    if mode != tpu.ModeKeys.EVAL:
      return spec
    _, logits = spec.eval_metrics[1]
    predictions = tf.argmax(logits, 1)
    step = tf.cast(v1.train.get_global_step(), tf.float32)
    return spec_class(mode, loss=spec.loss, eval_metric_ops={
        'accuracy': v1.metrics.accuracy(labels, predictions),
        'precision': v1.metrics.precision(labels, predictions),
        'step_mean': v1.metrics.mean(step * tf.ones_like(spec.loss))})
  return model_fn


def short_eval_input_fn(params):
  # 60 examples: the last batch is short.
  x, y = _examples(1)
  return tf.data.Dataset.from_tensor_slices(({'x': x[:60]}, y[:60])).batch(
      params['batch_size'])


def _expected_metrics(estimator):
  x, y = _examples(1)
  logits = np.stack([p['logits'] for p in estimator.predict(
      lambda params: tf.data.Dataset.from_tensor_slices({'x': x[:60]}).batch(
          params['batch_size']))])
  predicted = np.argmax(logits, 1)
  y = y[:60]
  return {'accuracy': np.mean(predicted == y),
          'precision': np.sum((predicted == 1) & (y == 1)) / np.sum(
              predicted == 1)}


@pytest.mark.parametrize('use_tpu', [False, True])
def test_estimator_spec_eval_metric_ops_off_a_tpu(tmp_path, use_tpu):
  # TPUEstimator evaluates a plain EstimatorSpec's eval_metric_ops on the
  # CPU with use_tpu=False, or with eval_on_tpu=False.
  config = tpu.RunConfig(
      model_dir=str(tmp_path), save_checkpoints_steps=1000,
      tpu_config=tpu.TPUConfig(iterations_per_loop=2, num_shards=2))
  estimator = tpu.TPUEstimator(
      model_fn=_metric_ops_model_fn(tpu), config=config, use_tpu=use_tpu,
      eval_on_tpu=False, train_batch_size=BATCH, eval_batch_size=BATCH,
      predict_batch_size=BATCH, params={'learning_rate': 0.5})
  estimator.train(train_input_fn, max_steps=4)
  results = estimator.evaluate(short_eval_input_fn)
  expected = _expected_metrics(estimator)
  for key, value in expected.items():
    np.testing.assert_allclose(results[key], value, rtol=1e-6, err_msg=key)
  assert results['step_mean'] == 4.0
  # Evaluation rounds in one training graph: each round's metrics start
  # from zero, so the step's mean is the round's step.
  history = estimator.train_and_evaluate(train_input_fn, short_eval_input_fn,
                                         max_steps=8, eval_every_steps=2)
  assert [(r['global_step'], r['step_mean']) for r in history] == [
      (6, 6.0), (8, 8.0)]
  for key, value in _expected_metrics(estimator).items():
    np.testing.assert_allclose(history[-1][key], value, rtol=1e-6)


@requires_estimator
def test_estimator_spec_eval_metric_ops_give_stock_numbers(tmp_path):
  got = {}
  for name, module in (('stock', v1.estimator.tpu), ('hook', tpu)):
    config = module.RunConfig(
        model_dir=str(tmp_path / name), save_checkpoints_steps=1000,
        tpu_config=module.TPUConfig(iterations_per_loop=2))
    estimator = module.TPUEstimator(
        model_fn=_metric_ops_model_fn(module, (
            v1.estimator.EstimatorSpec if name == 'stock' else
            tpu.EstimatorSpec)), config=config, use_tpu=False,
        train_batch_size=BATCH, eval_batch_size=BATCH,
        params={'learning_rate': 0.5})
    estimator.train(train_input_fn, max_steps=4)
    got[name] = estimator.evaluate(short_eval_input_fn)
  for key in ('accuracy', 'precision', 'step_mean', 'loss', 'global_step'):
    np.testing.assert_allclose(got['hook'][key], got['stock'][key],
                               rtol=1e-5, err_msg=key)
