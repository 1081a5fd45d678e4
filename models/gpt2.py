"""A small GPT-2 style language model over bytes.

Decoder-only transformer: token and position embeddings, pre-norm blocks of
causal self-attention and a GELU MLP, a final layer norm, and an output
layer tied to the token embedding. Trained with Adam, a linear warmup then
cosine decay of the learning rate, and gradient clipping by global norm.

The corpus is every file matched by a glob, read as raw bytes in records of
`seq_len + 1`; by default the Python standard library's own `.py` files, so
it is on every machine. Every `heldout_every`-th file (in sorted order) is
held out for evaluation.
"""
import glob
import math
import os
import sysconfig

import gin
import tensorflow as tf

import hookestimator as he
from hookestimator.models import Model
from hookestimator.models import replicated
from hookestimator.models import shard
from hookestimator.models.layers import dense, gelu, layer_norm

v1 = tf.compat.v1

VOCAB_SIZE = 256  # bytes
SHUFFLE_BUFFER = 4096


def default_corpus_glob():
  """The running interpreter's standard library sources."""
  return os.path.join(sysconfig.get_paths()['stdlib'], '*.py')


def corpus_files(corpus_glob, min_bytes):
  """The sorted files matched by corpus_glob holding at least min_bytes."""
  matched = sorted(glob.glob(corpus_glob, recursive=True))
  files = [f for f in matched
           if os.path.isfile(f) and os.path.getsize(f) >= min_bytes]
  if not files:
    raise ValueError(
        'corpus_glob %r matches %s; expected files of at least %d bytes' %
        (corpus_glob, '%d file(s), all too short' % len(matched)
         if matched else 'nothing', min_bytes))
  return files


def split_files(files, heldout_every):
  """(train, held out): every heldout_every-th file is held out."""
  heldout = files[::heldout_every]
  train = [f for i, f in enumerate(files) if i % heldout_every]
  return train or heldout, heldout


def byte_records(files, seq_len, batch_size, training, seed=0, params=None):
  """A dataset of (inputs, targets) int32 [batch, seq_len] byte windows;
  in a cluster (`params` with an input_context), of this worker's files."""
  record_bytes = seq_len + 1
  # Each file's tail shorter than a record is skipped as its "footer".
  tails = [os.path.getsize(f) % record_bytes for f in files]
  dataset = tf.data.Dataset.from_tensor_slices(
      (tf.constant(files), tf.constant(tails, tf.int64)))
  dataset = shard(dataset, params or {})
  if training:
    dataset = dataset.shuffle(len(files), seed=seed).repeat()
  dataset = dataset.interleave(
      lambda f, tail: tf.data.FixedLengthRecordDataset(
          f, record_bytes, footer_bytes=tail),
      cycle_length=min(16, len(files)), block_length=1)
  if training:
    dataset = dataset.shuffle(SHUFFLE_BUFFER, seed=seed + 1)

  def to_example(record):
    tokens = tf.cast(tf.io.decode_raw(record, tf.uint8), tf.int32)
    tokens.set_shape([record_bytes])
    return tokens[:-1], tokens[1:]
  dataset = dataset.map(to_example)
  return dataset.batch(batch_size, drop_remainder=training).prefetch(2)


def learning_rate_schedule(step, peak, warmup_steps, decay_steps,
                           final_ratio):
  """Linear warmup to `peak`, then cosine decay to peak * final_ratio."""
  step = tf.cast(step, tf.float32)
  warmup = peak * step / max(warmup_steps, 1)
  progress = tf.clip_by_value(
      (step - warmup_steps) / max(decay_steps - warmup_steps, 1), 0.0, 1.0)
  final = peak * final_ratio
  decay = final + 0.5 * (peak - final) * (1.0 + tf.cos(math.pi * progress))
  return tf.where(step < warmup_steps, warmup, decay)


def attention(x, num_heads, name, output_stddev):
  """Causal multi-head self-attention; x is [batch, time, depth]."""
  _, time, depth = x.shape.as_list()  # the batch may be short: unknown
  head = depth // num_heads
  with v1.variable_scope(name):
    qkv = dense(x, 3 * depth, 'qkv', stddev=0.02)

    def heads(t):  # [batch, time, depth] -> [batch, heads, time, head]
      return tf.transpose(tf.reshape(t, [-1, time, num_heads, head]),
                          [0, 2, 1, 3])
    q, k, v = [heads(t) for t in tf.split(qkv, 3, axis=-1)]
    scores = tf.matmul(q, k, transpose_b=True) / math.sqrt(head)
    causal = tf.linalg.band_part(tf.ones([time, time]), -1, 0)
    scores = scores * causal - 1e9 * (1.0 - causal)
    weights = tf.nn.softmax(scores)
    out = tf.reshape(tf.transpose(tf.matmul(weights, v), [0, 2, 1, 3]),
                     [-1, time, depth])
    return dense(out, depth, 'out', stddev=output_stddev)


def transformer_logits(tokens, num_layers, d_model, num_heads, seq_len):
  """tokens int32 [batch, time] -> logits [batch, time, VOCAB_SIZE]."""
  time = tokens.shape[1]
  wte = v1.get_variable('wte', [VOCAB_SIZE, d_model],
                        initializer=v1.random_normal_initializer(stddev=0.02))
  wpe = v1.get_variable('wpe', [seq_len, d_model],
                        initializer=v1.random_normal_initializer(stddev=0.01))
  h = tf.gather(wte, tokens) + wpe[:time]
  residual_stddev = 0.02 / math.sqrt(2 * num_layers)
  for layer in range(num_layers):
    with v1.variable_scope('block%d' % layer):
      h += attention(layer_norm(h, 'ln_attention'), num_heads, 'attention',
                     residual_stddev)
      m = dense(layer_norm(h, 'ln_mlp'), 4 * d_model, 'mlp_in', gelu,
                stddev=0.02)
      h += dense(m, d_model, 'mlp_out', stddev=residual_stddev)
  h = layer_norm(h, 'ln_final')
  return tf.tensordot(h, wte, [[2], [1]])  # tied to the token embedding


def make_model_fn(num_layers, d_model, num_heads, seq_len, learning_rate,
                  warmup_steps, decay_steps, final_lr_ratio, clip_norm):
  """The model_fn for the given sizes and optimiser settings."""

  def model_fn(features, labels, mode):
    logits = transformer_logits(features, num_layers, d_model, num_heads,
                                seq_len)
    if mode == he.ModeKeys.PREDICT:
      return he.HookEstimatorSpec(mode=mode, predictions={
          'next_byte': tf.argmax(logits[:, -1], -1, output_type=tf.int32)})
    token_loss = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=labels, logits=logits)
    loss = tf.reduce_mean(token_loss)  # nats per byte
    if mode == he.ModeKeys.EVAL:

      def metric_fn(example_loss):
        return {'bits_per_byte': v1.metrics.mean(example_loss / math.log(2))}
      return he.HookEstimatorSpec(
          mode=mode, loss=loss,
          eval_metrics=(metric_fn, [tf.reduce_mean(token_loss, 1)]))
    global_step = v1.train.get_global_step()
    lr = learning_rate_schedule(global_step, learning_rate, warmup_steps,
                                decay_steps, final_lr_ratio)
    optimizer = v1.train.AdamOptimizer(lr, beta2=0.99)
    if replicated():
      # The gradients of the global batch (each replica's loss scaled by
      # 1 / replicas, summed over them), clipped together.
      grads, variables = zip(*v1.tpu.CrossShardOptimizer(
          optimizer).compute_gradients(loss))
      grads = [he.cross_replica_sum(g) for g in grads]
    else:
      grads, variables = zip(*optimizer.compute_gradients(loss))
    grads, _ = tf.clip_by_global_norm(grads, clip_norm)
    train_op = optimizer.apply_gradients(zip(grads, variables),
                                         global_step=global_step)

    def host_call(loss, lr):
      return {'gpt2/loss': loss[0], 'gpt2/bits_per_byte': loss[0] / math.log(2),
              'gpt2/learning_rate': lr[0]}
    return he.HookEstimatorSpec(
        mode=mode, loss=loss, train_op=train_op,
        host_call=(host_call, [tf.reshape(loss, [1]), tf.reshape(lr, [1])]))
  return model_fn


@gin.configurable
def gpt2(corpus_glob=None, seq_len=128, num_layers=2, d_model=128,
         num_heads=4, learning_rate=3e-3, warmup_steps=100, decay_steps=2000,
         final_lr_ratio=0.1, clip_norm=1.0, heldout_every=20):
  """The byte-level GPT-2 model: its model_fn and input_fns.

  corpus_glob: the text files to train on (recursive `**` allowed); None
  for the standard library's `.py` files.
  """
  if d_model % num_heads:
    raise ValueError('d_model=%d must be a multiple of num_heads=%d' %
                     (d_model, num_heads))
  corpus_glob = corpus_glob or default_corpus_glob()
  train_files, heldout_files = split_files(
      corpus_files(corpus_glob, seq_len + 1), heldout_every)

  def train_input_fn(params):
    return byte_records(train_files, seq_len, params['batch_size'], True,
                        params=params)

  def eval_input_fn(params):
    return byte_records(heldout_files, seq_len, params['batch_size'], False)

  model_fn = make_model_fn(num_layers, d_model, num_heads, seq_len,
                           learning_rate, warmup_steps, decay_steps,
                           final_lr_ratio, clip_norm)
  return Model('gpt2', model_fn, train_input_fn, eval_input_fn)
