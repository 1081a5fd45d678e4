"""An MLP classifier on scikit-learn's bundled 8x8 handwritten digits.

1,797 images of 64 pixels, 10 classes; the data installs with
scikit-learn, so nothing is downloaded. A fixed split holds out
`heldout_examples` images (chosen by a seeded permutation) for evaluation.
"""
import gin
import numpy as np
import tensorflow as tf

import hookestimator as he
from hookestimator.config import check_positive_int
from hookestimator.models import Model
from hookestimator.models import replicated
from hookestimator.models import shard
from hookestimator.models.layers import dense

v1 = tf.compat.v1

NUM_CLASSES = 10


def load_split(heldout_examples, seed=0):
  """((train_x, train_y), (heldout_x, heldout_y)); pixels scaled to [0, 1]."""
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  digits = load_digits()
  count = len(digits.target)
  if not 0 < heldout_examples < count:
    raise ValueError('heldout_examples=%r; expected between 1 and %d' %
                     (heldout_examples, count - 1))
  order = np.random.RandomState(seed).permutation(count)
  x = (digits.data / 16.0).astype(np.float32)[order]
  y = digits.target.astype(np.int64)[order]
  cut = count - heldout_examples
  return (x[:cut], y[:cut]), (x[cut:], y[cut:])


def forward(features, hidden_units, seed=None):
  """Logits of the MLP: 64 -> hidden_units (ReLU, one layer each) -> 10;
  the initial weights drawn with `seed` (None: at random)."""
  net = features
  for i, units in enumerate(hidden_units):
    net = dense(net, units, 'hidden%d' % i, tf.nn.relu,
                seed=None if seed is None else seed + i)
  return dense(net, NUM_CLASSES, 'logits',
               seed=None if seed is None else seed + len(hidden_units))


def make_model_fn(hidden_units, learning_rate, seed=None):
  """The model_fn: Adam on the mean cross-entropy."""

  def model_fn(features, labels, mode):
    logits = forward(features, hidden_units, seed)
    predicted = tf.argmax(logits, 1)
    if mode == he.ModeKeys.PREDICT:
      return he.HookEstimatorSpec(mode=mode, predictions={
          'class': predicted, 'probabilities': tf.nn.softmax(logits)})
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=labels, logits=logits))
    if mode == he.ModeKeys.EVAL:

      def metric_fn(labels, predicted):
        return {'accuracy': v1.metrics.accuracy(labels, predicted)}
      return he.HookEstimatorSpec(mode=mode, loss=loss,
                                  eval_metrics=(metric_fn, [labels, predicted]))
    optimizer = v1.train.AdamOptimizer(learning_rate)
    if replicated():  # The gradients of the global batch.
      optimizer = v1.tpu.CrossShardOptimizer(optimizer)
    train_op = optimizer.minimize(loss,
                                  global_step=v1.train.get_global_step())
    correct = tf.cast(tf.equal(predicted, labels), tf.float32)

    def host_call(correct):
      return {'train_accuracy': tf.reduce_mean(correct)}
    return he.HookEstimatorSpec(mode=mode, loss=loss, train_op=train_op,
                                host_call=(host_call, [correct]))
  return model_fn


@gin.configurable
def digits_mlp(hidden_units=(128,), learning_rate=3e-3, heldout_examples=297,
               seed=None):
  """The digits classifier: its model_fn and input_fns. `seed` fixes the
  initial weights (None: random)."""
  hidden_units = [check_positive_int('hidden_units', units)
                  for units in hidden_units]
  (train_x, train_y), (heldout_x, heldout_y) = load_split(heldout_examples)

  def train_input_fn(params):
    dataset = shard(tf.data.Dataset.from_tensor_slices((train_x, train_y)),
                    params)
    return dataset.shuffle(len(train_y), seed=1).repeat().batch(
        params['batch_size'], drop_remainder=True)

  def eval_input_fn(params):
    dataset = tf.data.Dataset.from_tensor_slices((heldout_x, heldout_y))
    return dataset.batch(params['batch_size'])

  return Model('digits_mlp', make_model_fn(hidden_units, learning_rate, seed),
               train_input_fn, eval_input_fn)
