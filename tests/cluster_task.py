"""One task of a test cluster, in a process of its own:

    python tests/cluster_task.py CLUSTER MODEL_DIR MAX_STEPS REPLICAS TIMEOUT
        [BATCHES]

trains digits_mlp (16 hidden units) on its first 112 training examples, in
order (no shuffle), at a global batch of 16, to MAX_STEPS, with CLUSTER
(TF_CONFIG's JSON) as RunConfig(cluster=...); '' runs in this process
alone. TIMEOUT is peer_timeout_secs. With BATCHES the input is finite:
that many batches per input pipeline ('6'), or that many less the
pipeline's index ('6-': uneven). The chief prints {"step": N} at the end.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position

import hookestimator as he  # pylint: disable=g-import-not-at-top,wrong-import-position
from hookestimator.models import digits_mlp  # pylint: disable=g-import-not-at-top,wrong-import-position
from hookestimator.models import shard  # pylint: disable=g-import-not-at-top,wrong-import-position

EXAMPLES = 112  # 7 steps an epoch: no checkpoint (every 8) but 56k is at an epoch end
GLOBAL_BATCH = 16


def input_fn(params, batches=None):
  (x, y), _ = digits_mlp.load_split(297)
  dataset = tf.data.Dataset.from_tensor_slices((x[:EXAMPLES], y[:EXAMPLES]))
  dataset = shard(dataset, params).repeat().batch(params['batch_size'],
                                                  drop_remainder=True)
  if batches is None:
    return dataset
  count = int(batches.rstrip('-'))
  if batches.endswith('-'):
    count -= params['input_context'].input_pipeline_id
  return dataset.take(count)


def main():
  cluster, model_dir, max_steps, replicas, timeout = sys.argv[1:6]
  model = digits_mlp.digits_mlp(hidden_units=(16,), seed=1)
  config = he.RunConfig(model_dir=model_dir, iterations_per_loop=4,
                        save_checkpoints_steps=8, num_replicas=int(replicas),
                        cluster=cluster, peer_timeout_secs=float(timeout))
  estimator = he.HookEstimator(model.model_fn, config=config,
                               train_batch_size=GLOBAL_BATCH)
  batches = sys.argv[6] if len(sys.argv) > 6 else None
  estimator.train(lambda params: input_fn(params, batches),
                  max_steps=int(max_steps))
  print(json.dumps({'step': estimator.checkpoint_step()}))


if __name__ == '__main__':
  main()
