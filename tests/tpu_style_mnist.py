"""A digit classifier written for tf.compat.v1.estimator.tpu.TPUEstimator, in
the style of the public MNIST TPU example: model_fn(features, labels, mode,
params) with params['batch_size'], TPUEstimatorSpec with
eval_metrics=(metric_fn, [labels, logits]), CrossShardOptimizer on a TPU.

tests/test_tpu_dropin.py runs it unchanged except for the import line of
`tpu`, once through TensorFlow's TPUEstimator and once through
hookestimator.tpu. Images are synthetic 8x8 "digits" (a bright row per
class plus noise) so that it trains in a few steps; layers are built from
tf.compat.v1.get_variable.
"""
import numpy as np
import tensorflow.compat.v1 as tf

from tensorflow.compat.v1.estimator import tpu

NUM_CLASSES = 8
IMAGE_SIZE = 8


def make_digits(num_examples, seed):
  rng = np.random.RandomState(seed)
  labels = rng.randint(0, NUM_CLASSES, size=num_examples).astype(np.int64)
  images = rng.uniform(0, 64, size=(num_examples, IMAGE_SIZE, IMAGE_SIZE, 1))
  images[np.arange(num_examples), labels, :, 0] += 160
  return images.astype(np.float32), labels


def metric_fn(labels, logits):
  accuracy = tf.metrics.accuracy(
      labels=labels, predictions=tf.argmax(logits, axis=1))
  return {'accuracy': accuracy}


def _dense(inputs, units, name, activation=None):
  with tf.variable_scope(name):
    kernel = tf.get_variable(
        'kernel', [inputs.shape[-1], units],
        initializer=tf.truncated_normal_initializer(stddev=0.1, seed=7))
    bias = tf.get_variable('bias', [units], initializer=tf.zeros_initializer())
    outputs = tf.matmul(inputs, kernel) + bias
  return activation(outputs) if activation else outputs


def model_fn(features, labels, mode, params):
  """A convolution, a hidden layer and the class logits."""
  image = features / 255.
  with tf.variable_scope('conv'):
    kernel = tf.get_variable(
        'kernel', [3, 3, 1, 4],
        initializer=tf.truncated_normal_initializer(stddev=0.3, seed=3))
    y = tf.nn.relu(tf.nn.conv2d(image, kernel, [1, 1, 1, 1], 'SAME'))
  y = tf.reshape(y, [-1, IMAGE_SIZE * IMAGE_SIZE * 4])
  y = _dense(y, 32, 'hidden', tf.nn.relu)
  logits = _dense(y, NUM_CLASSES, 'logits')

  if mode == tf.estimator.ModeKeys.PREDICT:
    predictions = {
        'class_ids': tf.argmax(logits, axis=1),
        'probabilities': tf.nn.softmax(logits),
    }
    return tpu.TPUEstimatorSpec(mode, predictions=predictions)

  loss = tf.losses.sparse_softmax_cross_entropy(labels=labels, logits=logits)

  if mode == tf.estimator.ModeKeys.TRAIN:
    learning_rate = tf.train.exponential_decay(
        params['learning_rate'], tf.train.get_global_step(),
        decay_steps=1000, decay_rate=0.96)
    optimizer = tf.train.GradientDescentOptimizer(learning_rate=learning_rate)
    if params['use_tpu']:
      optimizer = tf.tpu.CrossShardOptimizer(optimizer)
    return tpu.TPUEstimatorSpec(
        mode=mode, loss=loss,
        train_op=optimizer.minimize(loss, tf.train.get_global_step()))

  if mode == tf.estimator.ModeKeys.EVAL:
    return tpu.TPUEstimatorSpec(
        mode=mode, loss=loss, eval_metrics=(metric_fn, [labels, logits]))


def train_input_fn(params):
  images, labels = make_digits(256, seed=1)
  return tf.data.Dataset.from_tensor_slices((images, labels)).repeat().batch(
      params['batch_size'], drop_remainder=True)


def eval_input_fn(params):
  images, labels = make_digits(96, seed=2)
  return tf.data.Dataset.from_tensor_slices((images, labels)).batch(
      params['batch_size'], drop_remainder=True)


def predict_input_fn(params):
  images, labels = make_digits(10, seed=3)
  # Ten examples: the last batch is short.
  return tf.data.Dataset.from_tensor_slices((images, labels)).batch(
      params['batch_size'])


def run(model_dir, use_tpu=True, train_steps=30, eval_steps=4,
        iterations=10, num_shards=8, batch_size=16):
  """Trains, evaluates and predicts as the example's main() does; returns
  (eval results, list of predictions)."""
  run_config = tpu.RunConfig(
      model_dir=model_dir,
      save_checkpoints_steps=1000,
      session_config=tf.ConfigProto(allow_soft_placement=True),
      tpu_config=tpu.TPUConfig(iterations, num_shards),
  )
  estimator = tpu.TPUEstimator(
      model_fn=model_fn,
      use_tpu=use_tpu,
      train_batch_size=batch_size,
      eval_batch_size=batch_size,
      predict_batch_size=batch_size,
      params={'learning_rate': 0.2},
      config=run_config)
  estimator.train(input_fn=train_input_fn, max_steps=train_steps)
  results = estimator.evaluate(input_fn=eval_input_fn, steps=eval_steps)
  predictions = list(estimator.predict(input_fn=predict_input_fn))
  return results, predictions
