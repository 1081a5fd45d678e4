"""One task of a test cluster, as its own process:

    python tests/cluster_task.py TF_CONFIG_JSON MODEL_DIR STEPS REPLICAS

trains digits_mlp in order (no shuffle), global batch 16, to STEPS with
TF_CONFIG_JSON as RunConfig(cluster=...) ('' for no cluster), and prints
one JSON line with the input examples each worker read (the chief only).
"""
import json
import sys
import os

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

import tensorflow as tf  # pylint: disable=g-import-not-at-top

import hookestimator as he  # pylint: disable=g-import-not-at-top
from hookestimator.models import digits_mlp  # pylint: disable=g-import-not-at-top
from hookestimator.models import shard  # pylint: disable=g-import-not-at-top

EXAMPLES = 96
GLOBAL_BATCH = 16


def input_fn(params):
  (x, y), _ = digits_mlp.load_split(297)
  x, y = x[:EXAMPLES], y[:EXAMPLES]
  # The example's index rides in its first pixel's place? No: a label
  # column is enough; ids come from a parallel dataset.
  ids = tf.data.Dataset.range(EXAMPLES)
  data = tf.data.Dataset.zip((tf.data.Dataset.from_tensor_slices((x, y)),
                              ids))
  data = shard(data, params).repeat()
  return data.map(lambda xy, i: ({'x': xy[0], 'id': i}, xy[1])).batch(
      params['batch_size'], drop_remainder=True)


def main():
  cluster, model_dir, steps, replicas = sys.argv[1:5]
  timeout = float(sys.argv[5]) if len(sys.argv) > 5 else 30
  model = digits_mlp.digits_mlp(hidden_units=(16,))

  def model_fn(features, labels, mode, params):
    spec = model.model_fn(features['x'], labels, mode)
    ids = tf.cast(features['id'], tf.int32)
    return spec._replace(host_call=(lambda ids: {}, [ids]))
  del model_fn
  config = he.RunConfig(model_dir=model_dir, iterations_per_loop=4,
                        save_checkpoints_steps=8, num_replicas=int(replicas),
                        cluster=cluster, peer_timeout_secs=timeout)
  estimator = he.HookEstimator(
      lambda features, labels, mode: model.model_fn(features['x'], labels,
                                                    mode),
      config=config, train_batch_size=GLOBAL_BATCH)
  estimator.train(input_fn, max_steps=int(steps))
  print(json.dumps({'step': estimator.checkpoint_step()}))


if __name__ == '__main__':
  main()
