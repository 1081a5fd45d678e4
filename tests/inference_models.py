"""A small classifier and data for the evaluate/predict/export tests, and
the same computations in numpy."""
import numpy as np
import tensorflow as tf

import hookestimator as he

v1 = tf.compat.v1
NUM_FEATURES = 4


def data(num_examples, seed=0):
  rng = np.random.RandomState(seed)
  x = rng.randn(num_examples, NUM_FEATURES).astype(np.float32)
  y = (x[:, 0] + 0.5 * x[:, 1] > 0.2).astype(np.int64)
  return x, y


def dataset(num_examples, batch_size, labels=True, drop_remainder=False,
            seed=0):
  """Batches of `num_examples` examples; the last one short unless
  drop_remainder."""
  x, y = data(num_examples, seed)
  slices = (x, y) if labels else x
  return tf.data.Dataset.from_tensor_slices(slices).batch(
      batch_size, drop_remainder=drop_remainder)


def failing_dataset(batch_size, threshold):
  """`dataset(200, batch_size)` whose map raises InvalidArgumentError
  'eval input failed' at the first batch holding an x[:, 0] >= threshold."""
  def check(x, y):
    ok = tf.debugging.Assert(tf.reduce_all(x[:, 0] < threshold),
                             ['eval input failed'])
    with tf.control_dependencies([ok]):
      return tf.identity(x), y
  return dataset(200, batch_size).map(check)


def train_input_fn(params):
  x, y = data(64, seed=1)
  return tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(
      params['batch_size'], drop_remainder=True)


def metric_fn(labels, logits):
  predicted = tf.argmax(logits, 1)
  return {
      'accuracy': v1.metrics.accuracy(labels, predicted),
      'mean_logit': v1.metrics.mean(logits[:, 1]),
      'positive_rate': v1.metrics.mean(tf.cast(labels, tf.float32)),
      'precision': v1.metrics.precision(labels, predicted),
  }


def model_fn(features, labels, mode, params):
  """Logistic regression; params may set 'learning_rate'."""
  w = v1.get_variable('w', [NUM_FEATURES, 2],
                      initializer=v1.constant_initializer(0.1))
  b = v1.get_variable('b', [2], initializer=v1.zeros_initializer())
  logits = tf.matmul(features, w) + b
  if mode == he.ModeKeys.PREDICT:
    return he.HookEstimatorSpec(mode, predictions={
        'logits': logits, 'classes': tf.argmax(logits, 1),
        'probabilities': tf.nn.softmax(logits)})
  loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=labels, logits=logits))
  if mode == he.ModeKeys.EVAL:
    return he.HookEstimatorSpec(mode, loss=loss,
                                eval_metrics=(metric_fn, [labels, logits]))
  train_op = v1.train.GradientDescentOptimizer(
      params.get('learning_rate', 0.5)).minimize(
          loss, global_step=v1.train.get_global_step())
  return he.HookEstimatorSpec(mode, loss=loss, train_op=train_op)


def numpy_logits(est, x):
  return x @ est.get_variable_value('w') + est.get_variable_value('b')


def numpy_loss(est, x, y, batch_size):
  """evaluate()'s loss, as Estimator's: the mean over the batches of each
  batch's mean cross entropy, a short last batch as it is (one replica off
  a TPU runs it unpadded)."""
  logits = numpy_logits(est, x)
  shifted = logits - logits.max(axis=1, keepdims=True)
  log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
  per_example = -log_probs[np.arange(len(y)), y]
  return np.mean([per_example[start:start + batch_size].mean()
                  for start in range(0, len(y), batch_size)])


def make(tmp_path, name='model', batch_size=8, iterations_per_loop=3,
         model=model_fn, feeding=None, **kwargs):
  config = he.RunConfig(model_dir=str(tmp_path / name),
                        iterations_per_loop=iterations_per_loop,
                        save_checkpoints_steps=1000, feeding=feeding)
  return he.HookEstimator(model, config=config, train_batch_size=batch_size,
                          **kwargs)


def trained(tmp_path, steps=12, **kwargs):
  est = make(tmp_path, **kwargs)
  est.train(train_input_fn, steps=steps)
  return est
