"""A small MLP classifier on synthetic clusters: the README's main job.

    python -m models.quickstart --model_dir runs/quickstart

Trains, logs throughput, writes per-step loss and accuracy to TensorBoard
through host_call, and prints where everything went. A second run with the
same model_dir resumes from its checkpoint.
"""
import argparse
import logging

import numpy as np
import tensorflow as tf

import hookestimator as he

v1 = tf.compat.v1

NUM_FEATURES = 16
NUM_CLASSES = 10
NUM_EXAMPLES = 8192


def make_data(seed=0):
  """Gaussian clusters around fixed random centres, one per class."""
  rng = np.random.RandomState(seed)
  centres = rng.randn(NUM_CLASSES, NUM_FEATURES).astype(np.float32) * 2.0
  labels = rng.randint(NUM_CLASSES, size=NUM_EXAMPLES).astype(np.int64)
  features = centres[labels] + rng.randn(NUM_EXAMPLES, NUM_FEATURES).astype(
      np.float32) * 1.5
  return features, labels


def input_fn(params):
  features, labels = make_data()
  dataset = tf.data.Dataset.from_tensor_slices((features, labels))
  return dataset.shuffle(NUM_EXAMPLES, seed=1).repeat().batch(
      params['batch_size'], drop_remainder=True)


def dense(inputs, units, name, activation=None):
  with v1.variable_scope(name):
    kernel = v1.get_variable('kernel', [inputs.shape[-1], units],
                             initializer=v1.glorot_uniform_initializer())
    bias = v1.get_variable('bias', [units], initializer=v1.zeros_initializer())
    outputs = tf.matmul(inputs, kernel) + bias
  return activation(outputs) if activation else outputs


def model_fn(features, labels, mode, params):
  hidden = dense(features, params.get('hidden', 64), 'hidden', tf.nn.relu)
  logits = dense(hidden, NUM_CLASSES, 'logits')
  loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=labels, logits=logits))
  optimizer = v1.train.AdamOptimizer(params.get('learning_rate', 1e-2))
  train_op = optimizer.minimize(loss, global_step=v1.train.get_global_step())
  correct = tf.cast(tf.equal(tf.argmax(logits, 1), labels), tf.float32)

  def host_call(correct):
    return {'accuracy': tf.reduce_mean(correct)}
  return he.HookEstimatorSpec(mode=mode, loss=loss, train_op=train_op,
                              host_call=(host_call, [correct]))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--model_dir', default='runs/quickstart')
  parser.add_argument('--steps', type=int, default=3000)
  parser.add_argument('--iterations_per_loop', type=int, default=100)
  parser.add_argument('--batch_size', type=int, default=64)
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format='%(asctime)s %(message)s')
  v1.logging.set_verbosity(v1.logging.ERROR)
  config = he.RunConfig(model_dir=args.model_dir,
                        iterations_per_loop=args.iterations_per_loop,
                        save_checkpoints_steps=1000,
                        log_step_count_steps=500)
  est = he.HookEstimator(model_fn, config=config,
                         train_batch_size=args.batch_size)
  est.train(input_fn, steps=args.steps)
  print('\nTrained to global step %d.' % est.get_variable_value('global_step'))
  print('Checkpoints: %s' % est.latest_checkpoint())
  print('TensorBoard logs (loss, accuracy, examples/sec) in: %s' %
        est.model_dir)
  print('Open them with:  .venv/bin/tensorboard --logdir %s' % est.model_dir)
  print('Run again with the same --model_dir to resume training.')


if __name__ == '__main__':
  main()
