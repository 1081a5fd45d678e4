"""A TF 1 TPU program in the style of tensorflow/tpu's MNIST and ResNet
examples: every TPU name comes from one module, TF 1's tf.contrib.tpu
(TPUEstimator, RunConfig, TPUConfig, InputPipelineConfig,
TPUEstimatorSpec, CrossShardOptimizer, cross_replica_sum,
bfloat16_scope).

tests/test_tpu_module.py runs it with that module as TensorFlow has it
and swapped as a whole for hookestimator.tpu: the line binding `tpu` is
the only one that changes. In training, the images are centred by the
mean over the global batch: on a TPU the replicas' sums meet through
cross_replica_sum. With params['precision'] = 'bfloat16' the hidden
layer runs in bfloat16 under bfloat16_scope, its variables float32.
"""
import numpy as np
import tensorflow
import tensorflow.compat.v1 as tf

tpu = tensorflow.contrib.tpu  # The program's TPU module.

NUM_CLASSES = 8
IMAGE_SIZE = 8


def make_digits(num_examples, seed):
  rng = np.random.RandomState(seed)
  labels = rng.randint(0, NUM_CLASSES, size=num_examples).astype(np.int64)
  images = rng.uniform(0, 1, size=(num_examples, IMAGE_SIZE * IMAGE_SIZE))
  rows = images.reshape(num_examples, IMAGE_SIZE, IMAGE_SIZE)
  rows[np.arange(num_examples), labels, :] += 2.0
  return images.astype(np.float32), labels


def _dense(inputs, units, name, activation=None):
  with tf.variable_scope(name):
    kernel = tf.get_variable(
        'kernel', [inputs.shape[-1], units], dtype=inputs.dtype,
        initializer=tf.truncated_normal_initializer(stddev=0.1, seed=7))
    bias = tf.get_variable('bias', [units], dtype=inputs.dtype,
                           initializer=tf.zeros_initializer())
    outputs = tf.matmul(inputs, kernel) + bias
  return activation(outputs) if activation else outputs


def _global_batch_mean(images, use_tpu):
  """The mean image over the global batch: each replica's sums, summed
  over the replicas on a TPU."""
  total = tf.reduce_sum(images, axis=0)
  count = tf.cast(tf.shape(images)[0], tf.float32)
  if use_tpu:
    total = tpu.cross_replica_sum(total)
    count = tpu.cross_replica_sum(count)
  return total / count


def metric_fn(labels, logits):
  return {'accuracy': tf.metrics.accuracy(
      labels=labels, predictions=tf.argmax(logits, axis=1))}


def model_fn(features, labels, mode, params):
  images = features
  if mode == tf.estimator.ModeKeys.TRAIN:
    images -= _global_batch_mean(images, params['use_tpu'])
  if params['precision'] == 'bfloat16':
    with tpu.bfloat16_scope():
      hidden = _dense(tf.cast(images, tf.bfloat16), 32, 'hidden', tf.nn.relu)
    hidden = tf.cast(hidden, tf.float32)
  else:
    hidden = _dense(images, 32, 'hidden', tf.nn.relu)
  logits = _dense(hidden, NUM_CLASSES, 'logits')

  if mode == tf.estimator.ModeKeys.PREDICT:
    return tpu.TPUEstimatorSpec(mode, predictions={
        'class_ids': tf.argmax(logits, axis=1),
        'probabilities': tf.nn.softmax(logits),
    })
  loss = tf.losses.sparse_softmax_cross_entropy(labels=labels, logits=logits)
  if mode == tf.estimator.ModeKeys.EVAL:
    return tpu.TPUEstimatorSpec(mode, loss=loss,
                                eval_metrics=(metric_fn, [labels, logits]))
  optimizer = tf.train.MomentumOptimizer(params['learning_rate'], 0.9)
  if params['use_tpu']:
    optimizer = tpu.CrossShardOptimizer(optimizer)
  return tpu.TPUEstimatorSpec(
      mode, loss=loss,
      train_op=optimizer.minimize(loss, tf.train.get_global_step()))


def train_input_fn(params):
  images, labels = make_digits(256, seed=1)
  return tf.data.Dataset.from_tensor_slices((images, labels)).repeat().batch(
      params['batch_size'], drop_remainder=True)


def eval_input_fn(params):
  images, labels = make_digits(64, seed=2)
  return tf.data.Dataset.from_tensor_slices((images, labels)).batch(
      params['batch_size'], drop_remainder=True)


def predict_input_fn(params):
  images, _ = make_digits(10, seed=3)
  return tf.data.Dataset.from_tensor_slices(images).batch(
      params['batch_size'])


def estimator(model_dir, use_tpu, precision='float32', num_shards=4,
              batch_size=16):
  config = tpu.RunConfig(
      model_dir=model_dir,
      save_checkpoints_steps=1000,
      tpu_config=tpu.TPUConfig(
          iterations_per_loop=4, num_shards=num_shards,
          per_host_input_for_training=tpu.InputPipelineConfig.PER_HOST_V2))
  return tpu.TPUEstimator(
      model_fn=model_fn, use_tpu=use_tpu, config=config,
      train_batch_size=batch_size, eval_batch_size=batch_size,
      predict_batch_size=batch_size,
      params={'learning_rate': 0.05, 'precision': precision})


def run(model_dir, use_tpu, precision='float32', train_steps=12):
  """Trains, evaluates and predicts; returns (eval results, predictions,
  the checkpoint's variable names)."""
  est = estimator(model_dir, use_tpu, precision)
  est.train(train_input_fn, max_steps=train_steps)
  results = est.evaluate(eval_input_fn, steps=4)
  predictions = list(est.predict(predict_input_fn))
  return results, predictions, est.get_variable_names()
