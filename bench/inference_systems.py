"""bench.peers' evaluate and predict workloads: the data, the model_fns and
one runner per system (hookestimator, tf.estimator.Estimator where it
exists, and a bare loop), served by bench.peer_systems' child processes.

The model is the bench's mlp (64 -> 256 relu -> 10, the same variables and
initialisers, bench/common.py) at batch INFERENCE_BATCH_SIZE, over
INFERENCE_EXAMPLES fixed examples (a numpy seed of their own): not a
multiple of the batch, so the last batch is short. The input_fn is
Dataset.from_tensor_slices(...).batch(256): no repeat, no drop_remainder.

Each runner first gets a checkpoint in its model_dir (`prepare`: one
training step); then every `evaluate()` / `predict()` call is timed whole,
from the call to its return (predict: until the last example is read),
fixed costs (graph, session, restore, threads) included:

- evaluate returns {'accuracy', 'loss'}: the loss is the mean
  over batches of each batch's mean loss (Estimator's and hookestimator's
  `loss`), the accuracy v1.metrics.accuracy over every example;
- predict returns the number of examples read, each as {'logits': row}.

The bare loop does per call what an evaluate or predict call cannot skip,
and nothing else: it builds one graph, starts a session and restores the
checkpoint; evaluate then runs one session.run of a tf.compat.v1.while_loop
that reads every batch from the dataset's iterator (a known count of
batches) and runs the same v1.metrics update ops, and reads the values;
predict runs one session.run per batch fetching the logits and iterates
their rows in Python.
"""
from __future__ import absolute_import, division, print_function

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import tensorflow as tf  # noqa: E402

import hookestimator as he  # noqa: E402
from hookestimator import compat  # noqa: E402
from bench import common  # noqa: E402
from bench.common import NEVER  # noqa: E402

v1 = tf.compat.v1

INFERENCE_WORKLOADS = ('evaluate', 'predict')
INFERENCE_BATCH_SIZE = 256
INFERENCE_EXAMPLES = 65573  # 256 whole batches and one of 37 examples
INFERENCE_BATCHES = -(-INFERENCE_EXAMPLES // INFERENCE_BATCH_SIZE)
INFERENCE_LOOP = 100  # hookestimator's iterations_per_loop
INFERENCE_DATA = common.make_data(seed=11, num_examples=INFERENCE_EXAMPLES)


def inference_input_fn(params=None):
  """(features, labels) in batches of 256, the last one short, once."""
  del params
  return tf.data.Dataset.from_tensor_slices(INFERENCE_DATA).batch(
      INFERENCE_BATCH_SIZE)


def predict_input_fn(params=None):
  """The features alone, batched as inference_input_fn's."""
  del params
  return tf.data.Dataset.from_tensor_slices(INFERENCE_DATA[0]).batch(
      INFERENCE_BATCH_SIZE)


def train_input_fn(params=None):
  """Whole batches of the same data, repeated: for the one training step
  that makes each system's checkpoint."""
  del params
  return tf.data.Dataset.from_tensor_slices(INFERENCE_DATA).batch(
      INFERENCE_BATCH_SIZE, drop_remainder=True).repeat()


def predicted_class(logits):
  return tf.argmax(logits, 1, output_type=tf.int32)


def metric_fn(labels, logits):
  """hookestimator's eval_metrics fn: the accuracy."""
  return {'accuracy': v1.metrics.accuracy(labels, predicted_class(logits))}


def hook_model_fn(features, labels, mode):
  if mode == compat.ModeKeys.PREDICT:
    return he.HookEstimatorSpec(
        mode=mode, predictions={'logits': common.mlp_logits(features)})
  if mode == compat.ModeKeys.EVAL:
    logits = common.mlp_logits(features)
    return he.HookEstimatorSpec(
        mode=mode, loss=common.mlp_loss(labels, logits),
        eval_metrics=(metric_fn, [labels, logits]))
  _, loss, train_op = common.mlp_logits_loss_and_train_op(features, labels)
  return he.HookEstimatorSpec(mode=mode, loss=loss, train_op=train_op)


def estimator_model_fn(features, labels, mode):
  spec = compat.ESTIMATOR.EstimatorSpec
  if mode == compat.ModeKeys.PREDICT:
    return spec(mode, predictions={'logits': common.mlp_logits(features)})
  if mode == compat.ModeKeys.EVAL:
    logits = common.mlp_logits(features)
    return spec(mode, loss=common.mlp_loss(labels, logits), eval_metric_ops={
        'accuracy': v1.metrics.accuracy(labels, predicted_class(logits))})
  _, loss, train_op = common.mlp_logits_loss_and_train_op(features, labels)
  return spec(mode, loss=loss, train_op=train_op)


def _is_example(prediction):
  """1 if `prediction` is one example's {'logits': [NUM_CLASSES]}, else 0:
  predict() calls count the examples they read so."""
  return int(prediction['logits'].shape == (common.NUM_CLASSES,))


class _EstimatorLike(object):
  """A runner over an estimator object with train/evaluate/predict."""

  _estimator = None

  def prepare(self):
    """One training step: the checkpoint every call restores."""
    self._estimator.train(train_input_fn, steps=1)

  def evaluate(self):
    results = self._estimator.evaluate(inference_input_fn)
    return {'accuracy': float(results['accuracy']),
            'loss': float(results['loss'])}

  def predict(self):
    count = 0
    for prediction in self._estimator.predict(predict_input_fn,
                                              yield_single_examples=True):
      count += _is_example(prediction)
    return count


class HookInference(_EstimatorLike):
  """hookestimator.HookEstimator at iterations_per_loop INFERENCE_LOOP."""

  def __init__(self, model_dir):
    config = he.RunConfig(model_dir=model_dir,
                          iterations_per_loop=INFERENCE_LOOP,
                          save_checkpoints_steps=NEVER,
                          log_step_count_steps=NEVER)
    self._estimator = he.HookEstimator(
        lambda features, labels, mode: hook_model_fn(features, labels, mode),
        config=config, train_batch_size=INFERENCE_BATCH_SIZE)


class EstimatorInference(_EstimatorLike):
  """tf.estimator.Estimator (where tensorflow-estimator is installed)."""

  def __init__(self, model_dir):
    config = compat.ESTIMATOR.RunConfig(
        model_dir=model_dir, save_checkpoints_steps=NEVER,
        save_summary_steps=NEVER, log_step_count_steps=NEVER)
    self._estimator = compat.ESTIMATOR.Estimator(
        lambda features, labels, mode: estimator_model_fn(features, labels,
                                                          mode),
        config=config)


def _in_loop_scope():
  """Resource variables: variables made in a loop body (the metrics') are
  created outside it."""
  return v1.variable_scope(v1.get_variable_scope(), use_resource=True)


def _metric(make, made):
  """Calls make() -> a v1.metrics (value, update_op) of the total / count
  kind (mean, accuracy); appends to `made` a function giving its value
  read from its variables (its own value tensor lies inside the loop that
  made it); returns the update op."""
  collection = v1.get_collection_ref(v1.GraphKeys.METRIC_VARIABLES)
  first = len(collection)
  _, update = make()
  variables = {v.op.name.split('/')[-1]: v for v in collection[first:]}
  made.append(lambda: tf.math.divide_no_nan(
      variables['total'].read_value(), variables['count'].read_value()))
  return update


class BareInference(object):
  """The bare loop: per call one graph, one session, the checkpoint
  restored; no hooks, threads or MonitoredSession."""

  def __init__(self, model_dir):
    self._model_dir = model_dir

  def prepare(self):
    """One training step on the first batch, saved as a checkpoint."""
    with tf.Graph().as_default():
      v1.train.create_global_step()
      features, labels = v1.data.make_one_shot_iterator(
          train_input_fn()).get_next()
      _, _, train_op = common.mlp_logits_loss_and_train_op(features, labels)
      saver = v1.train.Saver()
      with v1.Session() as session:
        session.run(v1.global_variables_initializer())
        session.run(train_op)
        saver.save(session, os.path.join(self._model_dir, 'model.ckpt'),
                   global_step=v1.train.get_global_step())

  def _restore(self, session):
    v1.train.Saver(v1.global_variables()).restore(
        session, v1.train.latest_checkpoint(self._model_dir))

  def evaluate(self):
    with tf.Graph().as_default():
      iterator = v1.data.make_one_shot_iterator(inference_input_fn())
      made = []

      def body(i):
        features, labels = iterator.get_next()
        logits = common.mlp_logits(features)
        updates = [
            _metric(lambda: v1.metrics.accuracy(
                labels, predicted_class(logits)), made),
            _metric(lambda: v1.metrics.mean(
                common.mlp_loss(labels, logits)), made)]
        with tf.control_dependencies(updates):
          return i + 1
      with _in_loop_scope():
        loop = v1.while_loop(lambda i: i < INFERENCE_BATCHES, body,
                             [tf.constant(0)], parallel_iterations=1)
      with tf.control_dependencies([loop]):
        values = {'accuracy': made[0](), 'loss': made[1]()}
      with v1.Session() as session:
        self._restore(session)
        session.run(v1.local_variables_initializer())
        results = session.run(values)
    return {'accuracy': float(results['accuracy']),
            'loss': float(results['loss'])}

  def predict(self):
    with tf.Graph().as_default():
      features = v1.data.make_one_shot_iterator(
          predict_input_fn()).get_next()
      logits = common.mlp_logits(features)
      count = 0
      with v1.Session() as session:
        self._restore(session)
        while True:
          try:
            batch = session.run(logits)
          except tf.errors.OutOfRangeError:
            break
          for row in batch:
            prediction = {'logits': row}
            count += _is_example(prediction)
    return count


def make_inference_runner(system, model_dir):
  if system == 'hook%d' % INFERENCE_LOOP:
    return HookInference(model_dir)
  if system == 'estimator':
    return EstimatorInference(model_dir)
  if system == 'bare':
    return BareInference(model_dir)
  raise ValueError('system %r has no evaluate or predict runner' % system)


class InferenceTimer(object):
  """One system's evaluate or predict, as bench.peers times it."""

  def __init__(self, system, workload, model_dir):
    if workload not in INFERENCE_WORKLOADS:
      raise ValueError('unknown inference workload %r' % workload)
    self.runner = make_inference_runner(system, model_dir)
    self.workload = workload
    self._call = getattr(self.runner, workload)

  def warmup(self):
    """The checkpoint, then one warm-up call; returns the warm-up call's
    wall time (the training step's excluded)."""
    self.runner.prepare()
    return common.timed(lambda _: self._call(), None)

  def measure(self):
    """One timed call: seconds, examples/sec and what it returned."""
    answer = {}

    def call(_):
      result = self._call()
      answer.update(result if isinstance(result, dict) else
                    {'examples': result})
    seconds = common.timed(call, None)
    answer.update(seconds=seconds, rate=(
        INFERENCE_EXAMPLES / seconds if seconds > 0 else None),
                  expected_examples=INFERENCE_EXAMPLES)
    return answer
