"""One task of a test cluster with feeders, in a process of its own:

    python tests/feeder_task.py CLUSTER MODEL_DIR MAX_STEPS EPOCHS TIMEOUT \
        [LOOP_SLEEP [REPLICAS]]

The chief trains digits_mlp (16 hidden units) at a batch of 16 on the
first EXAMPLES training examples, each with its id, to MAX_STEPS; EPOCHS
is how often the input repeats (0: forever). Every feeder reads its shard
(input_context) in order. The model counts in the variable `id_counts`
how often each id was trained on. A feeder task serves through
hookestimator.feed_forever. CLUSTER is TF_CONFIG's JSON ('' trains in this
process alone); TIMEOUT is peer_timeout_secs. The chief sleeps LOOP_SLEEP
seconds after each loop of 4 steps, trains REPLICAS replicas (1), and
prints {"step": N} at the end.
"""
import json
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position

import hookestimator as he  # pylint: disable=g-import-not-at-top,wrong-import-position
from hookestimator.models import digits_mlp  # pylint: disable=g-import-not-at-top,wrong-import-position
from hookestimator.models import shard  # pylint: disable=g-import-not-at-top,wrong-import-position

v1 = tf.compat.v1
# 48 examples per feeder's shard, 3 batches: an epoch of the two shards is
# 6 steps, which checkpoints every 4 steps seldom end exactly on.
EXAMPLES = 96
BATCH = 16


def input_fn(params):
  (x, y), _ = digits_mlp.load_split(297)
  ids = tf.range(EXAMPLES, dtype=tf.int64)
  dataset = tf.data.Dataset.from_tensor_slices(
      ({'pixels': x[:EXAMPLES], 'id': ids}, y[:EXAMPLES]))
  dataset = shard(dataset, params)
  epochs = params['epochs']
  dataset = dataset.repeat(epochs if epochs > 0 else None)
  return dataset.batch(params['batch_size'], drop_remainder=True)


def make_model_fn():
  model = digits_mlp.digits_mlp(hidden_units=(16,), seed=1)

  def model_fn(features, labels, mode):
    counts = v1.get_variable('id_counts', [EXAMPLES], tf.int64,
                             initializer=v1.zeros_initializer(),
                             trainable=False)
    spec = model.model_fn(features['pixels'], labels, mode)
    count = v1.scatter_add(counts, features['id'],
                           tf.ones_like(features['id']))
    return spec._replace(train_op=tf.group(spec.train_op, count))
  return model_fn


class SlowLoops(v1.train.SessionRunHook):

  def __init__(self, seconds):
    self._seconds = seconds

  def after_run(self, run_context, run_values):
    time.sleep(self._seconds)


def config(cluster, model_dir, timeout, replicas=1):
  return he.RunConfig(model_dir=model_dir, iterations_per_loop=4,
                      save_checkpoints_steps=4, cluster=cluster,
                      peer_timeout_secs=float(timeout),
                      num_replicas=replicas)


def main():
  logging.basicConfig()
  # Says whether each feeder's input position was restored.
  logging.getLogger('hookestimator.input_position').setLevel(logging.INFO)
  cluster, model_dir, max_steps, epochs, timeout = sys.argv[1:6]
  loop_sleep = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0
  replicas = int(sys.argv[7]) if len(sys.argv) > 7 else 1
  run_config = config(cluster, model_dir, timeout, replicas)
  if run_config.cluster is not None and (
      run_config.cluster.task_type == 'feeder'):
    he.feed_forever(run_config)
  estimator = he.HookEstimator(make_model_fn(), config=run_config,
                               train_batch_size=BATCH,
                               params={'epochs': int(epochs)})
  estimator.train(input_fn, max_steps=int(max_steps),
                  hooks=[SlowLoops(loop_sleep)])
  print(json.dumps({'step': estimator.checkpoint_step()}))


if __name__ == '__main__':
  main()
