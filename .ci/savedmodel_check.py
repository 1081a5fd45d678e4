"""A SavedModel exported on one TensorFlow line serves on another.

    python .ci/savedmodel_check.py export DIR   trains a small classifier,
        exports it under DIR and writes the inputs and the predictions
        hookestimator made for them beside it;
    python .ci/savedmodel_check.py serve DIR    loads that SavedModel with
        TensorFlow's own loader on this line, runs its serving signature
        on the same inputs and checks the predictions match.
"""
import glob
import os
import sys

import numpy as np
import tensorflow as tf

v1 = tf.compat.v1
FEATURES = 6
CLASSES = 3


def model_fn(features, labels, mode, params):
  import hookestimator as he  # pylint: disable=g-import-not-at-top
  x = features['x'] if isinstance(features, dict) else features
  w = v1.get_variable('w', [FEATURES, CLASSES],
                      initializer=v1.random_normal_initializer(seed=1))
  b = v1.get_variable('b', [CLASSES], initializer=v1.zeros_initializer())
  logits = tf.matmul(x, w) + b
  predictions = {'probabilities': tf.nn.softmax(logits),
                 'classes': tf.argmax(logits, axis=1)}
  if mode == he.ModeKeys.PREDICT:
    return he.HookEstimatorSpec(mode, predictions=predictions)
  loss = v1.losses.sparse_softmax_cross_entropy(labels, logits)
  train_op = v1.train.GradientDescentOptimizer(0.5).minimize(
      loss, global_step=v1.train.get_global_step())
  return he.HookEstimatorSpec(mode, loss=loss, train_op=train_op)


def data(count):
  rng = np.random.RandomState(0)
  x = rng.normal(size=(count, FEATURES)).astype(np.float32)
  return x, (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 1).astype(np.int64)


def export(base):
  import hookestimator as he  # pylint: disable=g-import-not-at-top
  x, y = data(64)
  est = he.HookEstimator(model_fn, he.RunConfig(
      model_dir=os.path.join(base, 'model'), iterations_per_loop=5),
                         train_batch_size=16)
  est.train(lambda params: tf.data.Dataset.from_tensor_slices(
      ({'x': x}, y)).repeat().batch(params['batch_size'],
                                    drop_remainder=True), steps=20)
  expected = list(est.predict(lambda params: tf.data.Dataset.from_tensor_slices(
      {'x': x}).batch(params['batch_size'])))
  receiver_fn = he.export.build_raw_serving_input_receiver_fn(
      {'x': tf.zeros([1, FEATURES])})
  with tf.Graph().as_default():
    path = est.export_saved_model(os.path.join(base, 'export'), receiver_fn)
  np.save(os.path.join(base, 'x.npy'), x)
  np.save(os.path.join(base, 'probabilities.npy'),
          np.stack([p['probabilities'] for p in expected]))
  print('exported on TF %s to %s' % (tf.__version__, path))


def serve(base):
  path, = glob.glob(os.path.join(base, 'export', '*'))
  x = np.load(os.path.join(base, 'x.npy'))
  expected = np.load(os.path.join(base, 'probabilities.npy'))
  with tf.Graph().as_default(), v1.Session() as session:
    meta_graph = v1.saved_model.loader.load(session, ['serve'], path)
    signature = meta_graph.signature_def['serving_default']
    got = session.run(signature.outputs['probabilities'].name,
                      {signature.inputs['x'].name: x})
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
  print('served on TF %s: %d predictions match' % (tf.__version__, len(x)))


if __name__ == '__main__':
  {'export': export, 'serve': serve}[sys.argv[1]](sys.argv[2])
