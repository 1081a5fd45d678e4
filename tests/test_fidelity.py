"""What real TPUEstimator programs do: input laid out for the TPU (no batch
axis), host_call fed the global step read inside model_fn, host_call tags
that the framework's own must not collide with."""
import collections

import numpy as np
import pytest
import tensorflow as tf

import hookestimator as he
from hookestimator import compat
from hookestimator import tpu
from tests.conftest import scalar_events

v1 = tf.compat.v1
HEIGHT, WIDTH, CHANNELS, CLASSES = 4, 4, 2, 3


def events(model_dir):
  """{tag: [(step, value), ...]} of every scalar event in model_dir, every
  write kept (duplicates included)."""
  found = collections.defaultdict(list)
  for tag, step, value in scalar_events(model_dir):
    found[tag].append((step, value))
  return found


def _images(count):
  rng = np.random.RandomState(0)
  labels = rng.randint(0, CLASSES, size=count)
  images = rng.normal(size=(count, HEIGHT, WIDTH, CHANNELS)).astype(np.float32)
  images[np.arange(count), labels, :, :] += 3.0
  return images, labels.astype(np.int32)


def hwcn_input_fn(params, count=64, repeat=True):
  """As the TPU image programs feed: each batch transposed to HWCN and
  flattened to one 1-D tensor; only the labels keep a batch axis."""
  batch_size = params['batch_size']
  images, labels = _images(count)
  dataset = tf.data.Dataset.from_tensor_slices((images, labels))
  if repeat:
    dataset = dataset.repeat()
  dataset = dataset.batch(batch_size, drop_remainder=True)
  return dataset.map(lambda x, y: (
      tf.reshape(tf.transpose(x, [1, 2, 3, 0]), [-1]), y))


def hwcn_model_fn(features, labels, mode, params):
  batch_size = params['batch_size']
  images = tf.transpose(tf.reshape(
      features, [HEIGHT, WIDTH, CHANNELS, batch_size]), [3, 0, 1, 2])
  flat = tf.reshape(images, [batch_size, -1])
  w = v1.get_variable('w', [HEIGHT * WIDTH * CHANNELS, CLASSES],
                      initializer=v1.zeros_initializer())
  logits = tf.matmul(flat, w)
  if mode == he.ModeKeys.PREDICT:
    return tpu.TPUEstimatorSpec(mode, predictions={
        'classes': tf.argmax(logits, axis=1)})
  loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=labels, logits=logits))
  if mode == he.ModeKeys.EVAL:
    def metric_fn(labels, logits):
      return {'accuracy': v1.metrics.accuracy(labels,
                                              tf.argmax(logits, axis=1))}
    return tpu.TPUEstimatorSpec(mode, loss=loss,
                                eval_metrics=(metric_fn, [labels, logits]))
  global_step = v1.train.get_global_step()
  train_op = v1.train.GradientDescentOptimizer(0.1).minimize(
      loss, global_step=global_step)
  return tpu.TPUEstimatorSpec(mode, loss=loss, train_op=train_op)


def _tpu_estimator(model_dir, model_fn, iterations_per_loop=5,
                   log_step_count_steps=100, session_config=None, **kwargs):
  config = tpu.RunConfig(
      model_dir=str(model_dir), save_checkpoints_steps=1000,
      log_step_count_steps=log_step_count_steps,
      session_config=session_config,
      tpu_config=tpu.TPUConfig(
          iterations_per_loop=iterations_per_loop,
          per_host_input_for_training=tpu.InputPipelineConfig.PER_HOST_V2))
  kwargs.setdefault('train_batch_size', 8)
  return tpu.TPUEstimator(model_fn=model_fn, config=config, **kwargs)


def test_flattened_hwcn_input_trains_evaluates_and_predicts(tmp_path):
  est = _tpu_estimator(tmp_path, hwcn_model_fn, eval_batch_size=8,
                       predict_batch_size=8)
  est.train(hwcn_input_fn, max_steps=40)
  results = est.evaluate(lambda params: hwcn_input_fn(params, repeat=False),
                         steps=4)
  assert results['global_step'] == 40
  assert results['accuracy'] > 0.9
  # steps=None over whole batches: nothing to pad, every batch read once.
  assert est.evaluate(lambda params: hwcn_input_fn(
      params, repeat=False))['accuracy'] == pytest.approx(
          est.evaluate(lambda params: hwcn_input_fn(params, repeat=False),
                       steps=8)['accuracy'])
  predictions = list(est.predict(lambda params: hwcn_input_fn(
      params, count=16, repeat=False)))
  assert len(predictions) == 16
  _, labels = _images(16)
  assert np.mean([p['classes'] for p in predictions] == labels) > 0.9


def _global_step_host_call_model_fn(host_call_tags):
  """model_fn feeding host_call the global step read unordered, as the
  canonical TPU programs do: `tf.reshape(global_step, [1])` beside the
  loss, with nothing ordering that read against minimize's increment."""
  def model_fn(features, labels, mode, params):
    w = v1.get_variable('w', [4, 1])
    loss = tf.reduce_mean(tf.square(tf.matmul(features, w)[:, 0] - labels))
    global_step = v1.train.get_global_step()
    train_op = v1.train.GradientDescentOptimizer(0.01).minimize(
        loss, global_step=global_step)
    gs_t = tf.reshape(global_step, [1])
    loss_t = tf.reshape(loss, [1])

    def host_call_fn(gs, loss):
      return {tag: tf.cast(gs[0], tf.float32) if tag == 'step_seen' else
              loss[0] for tag in host_call_tags}
    return tpu.TPUEstimatorSpec(mode, loss=loss, train_op=train_op,
                                host_call=(host_call_fn, [gs_t, loss_t]))
  return model_fn


def _linear_input_fn(params):
  x = np.random.RandomState(1).normal(size=(256, 4)).astype(np.float32)
  return tf.data.Dataset.from_tensor_slices((x, x[:, 0])).repeat().batch(
      params['batch_size'], drop_remainder=True)


def _upstream(op):
  """Every op that must run before `op` in its loop iteration: through
  inputs and control inputs, on up (not back through a TF 1 loop's
  NextIteration, into the iteration before)."""
  seen, todo = set(), [op]
  while todo:
    current = todo.pop()
    for parent in [t.op for t in current.inputs] + list(
        current.control_inputs):
      if parent not in seen and parent.type != 'NextIteration':
        seen.add(parent)
        todo.append(parent)
  return seen


@pytest.mark.parametrize('num_shards', [1, 2])
def test_the_increment_waits_for_every_global_step_read_model_fn_made(
    tmp_path, num_shards):
  # Checked in the built graph, so it holds whatever order the executor
  # happens to pick: each replica's increment of the global step must
  # wait for every read of it that model_fn made, ordered or not.
  built = []

  def model_fn(features, labels, mode, params):
    graph = v1.get_default_graph()
    first = len(graph.get_operations())
    global_step = v1.train.get_global_step()
    learning_rate = v1.train.exponential_decay(0.01, global_step, 10, 0.5)
    w = v1.get_variable('w', [4, 1])
    loss = tf.reduce_mean(tf.square(tf.matmul(features, w)[:, 0] - labels))
    train_op = tpu.CrossShardOptimizer(v1.train.GradientDescentOptimizer(
        learning_rate)).minimize(loss, global_step=global_step)
    # The canonical programs' unordered reads, made after minimize().
    gs_t = tf.reshape(global_step, [1])
    as_float = tf.cast(global_step, tf.float32)
    loss_t = tf.reshape(loss + 0.0 * as_float, [1])
    built.append(graph.get_operations()[first:])
    return tpu.TPUEstimatorSpec(
        mode, loss=loss, train_op=train_op,
        host_call=(lambda gs, l: {'seen': tf.cast(gs[0], tf.float32)},
                   [gs_t, loss_t]))

  config = tpu.RunConfig(
      model_dir=str(tmp_path),
      tpu_config=tpu.TPUConfig(iterations_per_loop=2, num_shards=num_shards))
  est = tpu.TPUEstimator(model_fn=model_fn, config=config, use_tpu=True,
                         train_batch_size=8)
  est.train(_linear_input_fn, max_steps=2)
  assert len(built) == num_shards
  for ops in built:
    increments = [op for op in ops if op.type == 'AssignAddVariableOp']
    assert len(increments) == 1, [op.name for op in increments]
    increment = increments[0]
    handle = increment.inputs[0]
    after = {op for op in ops if increment in _upstream(op)}
    reads = [op for op in ops if op.type == 'ReadVariableOp'
             and op.inputs[0].name == handle.name and op not in after]
    # exponential_decay's read, the reshape's and the cast's at least.
    assert len(reads) >= 3, [op.name for op in reads]
    waits_for = _upstream(increment)
    assert [op.name for op in reads if op not in waits_for] == []


@pytest.mark.parametrize('inter_op_threads', [None, 4])
def test_global_step_read_in_model_fn_is_the_steps_own_value(
    tmp_path, inter_op_threads):
  # 2,000 loops of 10 steps: without the ordering, some reads ran after the
  # increment and their summaries landed one step late; with several
  # inter-op threads the executor is freer to run them late.
  steps = 20000
  session_config = None
  if inter_op_threads:
    session_config = v1.ConfigProto(
        inter_op_parallelism_threads=inter_op_threads)
  est = _tpu_estimator(tmp_path, _global_step_host_call_model_fn(
      ['step_seen']), iterations_per_loop=10, session_config=session_config)
  est.train(_linear_input_fn, max_steps=steps)
  seen = events(est.model_dir)['step_seen']
  assert len(seen) == steps
  assert sorted(step for step, _ in seen) == list(range(steps))
  late = [(step, value) for step, value in seen if value != step]
  assert late == []


def _bert_style_model_fn(built):
  """model_fn as BERT's optimization.py trains: apply_gradients without the
  global step, then its own `global_step.assign(global_step + 1)` grouped
  into train_op, and host_call fed the step it read."""
  def model_fn(features, labels, mode, params):
    graph = v1.get_default_graph()
    first = len(graph.get_operations())
    global_step = v1.train.get_or_create_global_step()
    w = v1.get_variable('w', [4, 1])
    loss = tf.reduce_mean(tf.square(tf.matmul(features, w)[:, 0] - labels))
    optimizer = tpu.CrossShardOptimizer(
        v1.train.GradientDescentOptimizer(0.01))
    grads_and_vars = optimizer.compute_gradients(loss)
    train_op = optimizer.apply_gradients(grads_and_vars)
    new_global_step = global_step + 1
    train_op = tf.group(train_op, [global_step.assign(new_global_step)])
    built.append((graph, graph.get_operations()[first:]))
    return tpu.TPUEstimatorSpec(
        mode, loss=loss, train_op=train_op,
        host_call=(lambda gs: {'seen': tf.cast(gs[0], tf.float32)},
                   [tf.reshape(global_step, [1])]))
  return model_fn


@pytest.mark.parametrize('num_shards', [1, 2])
def test_a_model_fn_increment_waits_for_the_loops_own_step_read(
    tmp_path, num_shards):
  # The loop reads the step it labels each step's outfeed with before
  # model_fn runs; an increment model_fn makes itself must wait for that
  # read too, or a step's summaries are labelled with the next step.
  built = []
  config = tpu.RunConfig(
      model_dir=str(tmp_path),
      tpu_config=tpu.TPUConfig(iterations_per_loop=2, num_shards=num_shards))
  est = tpu.TPUEstimator(model_fn=_bert_style_model_fn(built), config=config,
                         use_tpu=True, train_batch_size=8)
  est.train(_linear_input_fn, max_steps=2)
  graph, model_ops = built[0]
  increments = [op for op in model_ops if op.type == 'AssignVariableOp'
                and op.name != 'w/Assign']  # w's initializer, outside.
  assert len(increments) == 1, [op.name for op in increments]
  increment = increments[0]
  handle = increment.inputs[0]
  after = {op for op in graph.get_operations() if increment in _upstream(op)}
  # Reads whose value something uses (a read nothing consumes labels
  # nothing).
  reads = [op for op in graph.get_operations() if op.type == 'ReadVariableOp'
           and op.inputs[0].name == handle.name and op not in after
           and op.outputs[0].consumers()]
  # The loop's own read, model_fn's `global_step + 1` and the reshape's.
  assert len(reads) >= 3, [op.name for op in reads]
  waits_for = _upstream(increment)
  assert [op.name for op in reads if op not in waits_for] == []


def test_a_model_fn_increment_labels_every_step_once(tmp_path):
  steps = 400
  est = _tpu_estimator(
      tmp_path, _bert_style_model_fn([]), iterations_per_loop=10,
      session_config=v1.ConfigProto(inter_op_parallelism_threads=4))
  est.train(_linear_input_fn, max_steps=steps)
  seen = events(est.model_dir)['seen']
  assert sorted(step for step, _ in seen) == list(range(steps))
  assert [(step, value) for step, value in seen if value != step] == []


def test_framework_tags_never_collide_with_host_call_tags(tmp_path):
  est = _tpu_estimator(tmp_path, _global_step_host_call_model_fn(
      ['loss', 'examples/sec']), iterations_per_loop=5,
                       log_step_count_steps=5)
  est.train(_linear_input_fn, max_steps=10)
  found = events(est.model_dir)
  # The program's own series, once per step, labelled with the step as
  # host_call read it; the framework's beside it, as Estimator labels its
  # loss: with the global step after the step.
  assert sorted(step for step, _ in found['loss']) == list(range(10))
  assert sorted(step for step, _ in found['loss_1']) == list(range(1, 11))
  for step, value in found['loss']:
    assert value == pytest.approx(dict(found['loss_1'])[step + 1], rel=1e-6)
  assert sorted(step for step, _ in found['examples/sec_1']) == [5, 10]
  assert sorted(step for step, _ in found['examples/sec']) == list(range(10))


@pytest.mark.skipif(not compat.IS_TF2, reason='tf.summary writers in a '
                    'host_call are written the TF 2 way here')
def test_a_host_call_writing_loss_with_its_own_writer_keeps_the_tag(tmp_path):
  model_dir = str(tmp_path)

  def model_fn(features, labels, mode, params):
    spec = _global_step_host_call_model_fn([])(features, labels, mode,
                                               params)
    _, tensors = spec.host_call

    def host_call_fn(gs, loss):
      writer = tf.compat.v2.summary.create_file_writer(model_dir)
      with writer.as_default(), tf.compat.v2.summary.record_if(True):
        return [tf.compat.v2.summary.scalar('loss', loss[0], step=gs[0])]
    return spec._replace(host_call=(host_call_fn, tensors))
  est = _tpu_estimator(tmp_path, model_fn, iterations_per_loop=5)
  est.train(_linear_input_fn, max_steps=10)
  found = events(model_dir)
  assert sorted(step for step, _ in found['loss']) == list(range(10))
  assert sorted(step for step, _ in found['loss_1']) == list(range(1, 11))
