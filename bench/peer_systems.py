"""The workloads and systems of bench.peers, and the child process that
serves one system.

A child is started by bench.peers as

    python -m bench.peer_systems SYSTEM MODEL_DIR_ROOT

It imports TensorFlow, answers {"ok": true, "ready": ...} and then reads
one JSON command per line on stdin, answering each with one JSON line:

    {"cmd": "warmup", "workloads": [...], "steps": {workload: n}}
        -> seconds per workload ({row: seconds} for system 'replicas')
    {"cmd": "measure", "workload": W, "base": B, "steps": S}
        -> base_seconds, long_seconds, rate = S / (long - base), the
           global step against the steps trained; system 'replicas'
           answers {"rows": {row: those fields and the model's trainable
           parameters}}, one per row of REPLICA_SYSTEMS
    {"cmd": "measure", "workload": "evaluate" or "predict"}
        -> seconds of one call, rate = examples / seconds, and what the
           call returned (evaluate: accuracy, loss; predict: examples)
           (bench/inference_systems.py; their warm-up first makes the
           checkpoint, then makes one warm-up call)
    {"cmd": "memory", "warmup": n, "steps": n}   (system hook100)
        -> the samples taken after every loop
    {"cmd": "quit"}

Errors are answered as {"ok": false, "error": traceback}. The child exits
when its stdin closes. Its file descriptor 1 is pointed at stderr so that
nothing but the answers reaches the protocol channel.
"""
from __future__ import absolute_import, division, print_function

import collections
import functools
import json
import os
import shutil
import sys
import time
import traceback

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import hookestimator as he  # noqa: E402
from hookestimator import compat  # noqa: E402
from bench import common  # noqa: E402
from bench import soak  # noqa: E402
from bench.common import BATCH_SIZE, NEVER  # noqa: E402
from bench.inference_systems import (INFERENCE_WORKLOADS,  # noqa: E402
                                     InferenceTimer)

v1 = tf.compat.v1

GPT2_BATCH_SIZE = 32
# hookestimator.models.gpt2.gpt2() with the values of gin/runs/gpt2_tiny.gin.
GPT2_TINY = dict(seq_len=128, num_layers=2, d_model=128, num_heads=4,
                 learning_rate=3e-3, warmup_steps=100, decay_steps=2000,
                 clip_norm=1.0)
# gpt2()'s own default for the one setting GPT2_TINY leaves to it; the
# replica rows rebuild the train step and need it spelt out.
GPT2_REPLICA_DEFAULTS = dict(final_lr_ratio=0.1)
GPT2_LIMIT_BATCHES = 16
# The input-bound pipeline: this many rounds of x <- tanh(x @ M) on each
# [64, 64] batch, M a constant. (A map per example would cost tf.data ~20 us
# per example, ~10x an mlp step per batch: too much to show overlap.)
INPUT_ROUNDS = 18

# The replica rows, all served by the one system 'replicas': name ->
# (replicas, whether gradients are summed across them, label). All are
# hookestimator at iterations_per_loop REPLICA_LOOP with the model's
# optimizer wrapped in CrossShardOptimizer (the identity with one replica),
# at the workload's global batch. 'replicas2-nosum' is the reference for the
# all-reduce's cost: the same two replicas, their gradients not summed.
REPLICA_LOOP = 100
REPLICA_SYSTEMS = collections.OrderedDict([
    ('replicas1', (1, True, 'hookestimator, 1 replica')),
    ('replicas2', (2, True, 'hookestimator, 2 replicas')),
    ('replicas2-nosum', (2, False,
                         'hookestimator, 2 replicas, gradients not summed')),
])

# name -> (label, loop size as shown, workloads it can serve): the systems
# this TensorFlow line has. Estimator needs tensorflow-estimator (TF 2.15 and
# older); Keras Model.fit with steps_per_execution needs TF 2.
SYSTEMS = {
    'limit': ('the limit (bare while_loop)', '-',
              ('mlp', 'gpt2-tiny', 'pipeline')),
    'bare1': ('the bare loop, 1 step per session.run', '1', ('mlp',)),
    'bare': ('the bare loop', '-', INFERENCE_WORKLOADS),
    'hook1': ('hookestimator', '1', ('mlp', 'gpt2-tiny')),
    'hook10': ('hookestimator', '10', ('mlp', 'gpt2-tiny')),
    'hook100': ('hookestimator', '100',
                ('mlp', 'gpt2-tiny', 'host_call', 'input-bound',
                 'pipeline') + INFERENCE_WORKLOADS),
    'hook1000': ('hookestimator', '1000', ('mlp',)),
    'input-alone': ('input alone', '-', ('input-bound',)),
    'replicas': ('hookestimator, 1 and 2 replicas', str(REPLICA_LOOP),
                 ('mlp', 'gpt2-tiny')),
}
if common.HAS_ESTIMATOR:
  SYSTEMS['estimator'] = ('tf.estimator.Estimator', '-',
                          ('mlp', 'gpt2-tiny', 'input-bound', 'pipeline') +
                          INFERENCE_WORKLOADS)
if compat.IS_TF2:
  SYSTEMS['keras1'] = ('Keras Model.fit', '1', ('mlp',))
  SYSTEMS['keras100'] = ('Keras Model.fit', '100', ('mlp', 'pipeline'))


# ----------------------------------------------------------------- workloads
class Workload(object):
  """A model and its input: `step(features, labels)` returns the spec
  pieces (loss, train_op, host_call or None); `input_fn(params)` the
  training dataset; `batches()` numpy (features, labels) batches for the
  limit; `replica_step(sum_gradients)` (where the workload has replica
  rows) a step like `step` whose optimizer is wrapped in
  CrossShardOptimizer, or, without `sum_gradients`, one that sums no
  gradients."""

  def __init__(self, name, batch_size, step, input_fn, batches,
               replica_step=None):
    self.name = name
    self.batch_size = batch_size
    self.step = step
    self.input_fn = input_fn
    self.batches = batches
    self.replica_step = replica_step

  def hook_model_fn(self, features, labels, mode):
    loss, train_op, host_call = self.step(features, labels)
    return he.HookEstimatorSpec(mode=mode, loss=loss, train_op=train_op,
                                host_call=host_call)

  def estimator_model_fn(self, features, labels, mode):
    loss, train_op, _ = self.step(features, labels)
    return compat.ESTIMATOR.EstimatorSpec(mode=mode, loss=loss,
                                          train_op=train_op)


def mlp_step(features, labels):
  _, loss, train_op = common.mlp_logits_loss_and_train_op(features, labels)
  return loss, train_op, None


def unread_cross_replica_sum():
  """A cross-replica sum of a constant that nothing reads. hookestimator
  refuses N > 1 replicas whose model makes no cross-replica sum (they would
  train apart); this one satisfies that check, and as nothing reads it, the
  session prunes it: the step runs no all-reduce at all."""
  v1.tpu.cross_replica_sum(tf.constant(0.0))


def summing_optimizer(sum_gradients):
  """The optimizer wrapper of a replica step: CrossShardOptimizer, or none
  (after an unread cross-replica sum) when gradients are not summed."""
  if sum_gradients:
    return v1.tpu.CrossShardOptimizer
  unread_cross_replica_sum()
  return lambda optimizer: optimizer


def mlp_replica_step(sum_gradients):
  def step(features, labels):
    _, loss, train_op = common.mlp_logits_loss_and_train_op(
        features, labels, summing_optimizer(sum_gradients))
    return loss, train_op, None
  return step


def three_scalars(loss, accuracy, mean_logit):
  return {'host/loss': loss[0], 'host/accuracy': accuracy[0],
          'host/mean_logit': mean_logit[0]}


def mlp_host_call_step(features, labels):
  """The MLP with a host_call of three scalars every step."""
  logits, loss, train_op = common.mlp_logits_loss_and_train_op(features,
                                                               labels)
  accuracy = tf.reduce_mean(tf.cast(
      tf.equal(tf.argmax(logits, 1, output_type=tf.int32), labels),
      tf.float32))
  tensors = [tf.reshape(t, [1]) for t in (loss, accuracy,
                                          tf.reduce_mean(logits))]
  return loss, train_op, (three_scalars, tensors)


def mlp_batches():
  return common.data_batches(BATCH_SIZE)


def expensive_input_fn(params):
  """The MLP's data, each batch put through INPUT_ROUNDS rounds of
  x <- tanh(x @ M) (M a constant) in a sequential map (no parallel calls,
  no prefetch): deliberately costly on the host, deterministic."""
  mixing = np.random.RandomState(3).normal(
      scale=1.0 / np.sqrt(common.NUM_INPUTS),
      size=(common.NUM_INPUTS, common.NUM_INPUTS)).astype(np.float32)

  def transform(features, labels):
    m = tf.constant(mixing)
    for _ in range(INPUT_ROUNDS):
      features = tf.tanh(tf.matmul(features, m))
    return features, labels
  dataset = tf.data.Dataset.from_tensor_slices(common.DATA).repeat()
  return dataset.batch(params['batch_size'], drop_remainder=True).map(
      transform)


def per_example_input_fn(params):
  """The MLP's data as users' pipelines read it: single examples batched
  on the fly, then prefetched."""
  return tf.data.Dataset.from_tensor_slices(common.DATA).repeat().batch(
      params['batch_size'], drop_remainder=True).prefetch(
          tf.data.experimental.AUTOTUNE)


def gpt2_workload():
  from hookestimator.models import gpt2  # pylint: disable=g-import-not-at-top
  model = gpt2.gpt2(**GPT2_TINY)

  def step(features, labels):
    # The model's own train step, its host_call dropped.
    spec = model.model_fn(features, labels, compat.ModeKeys.TRAIN)
    return spec.loss, spec.train_op, None

  def replica_step(sum_gradients):
    """gpt2.make_model_fn's train step, rebuilt from the module's own
    pieces with its Adam optimizer wrapped, as a TPU program wraps it: the
    model_fn builds its optimizer inside, out of the bench's reach.
    Gradients are clipped per replica before they are summed, as in a TPU
    program that clips between compute_ and apply_gradients."""
    config = dict(GPT2_REPLICA_DEFAULTS, **GPT2_TINY)

    def train_step(features, labels):
      # In the step, as each replica's sums must be made in its own build.
      wrap = summing_optimizer(sum_gradients)
      logits = gpt2.transformer_logits(
          features, config['num_layers'], config['d_model'],
          config['num_heads'], config['seq_len'])
      loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
          labels=labels, logits=logits))
      global_step = v1.train.get_global_step()
      lr = gpt2.learning_rate_schedule(
          global_step, config['learning_rate'], config['warmup_steps'],
          config['decay_steps'], config['final_lr_ratio'])
      optimizer = wrap(v1.train.AdamOptimizer(lr, beta2=0.99))
      grads, variables = zip(*optimizer.compute_gradients(loss))
      grads, _ = tf.clip_by_global_norm(grads, config['clip_norm'])
      train_op = optimizer.apply_gradients(zip(grads, variables),
                                           global_step=global_step)
      return loss, train_op, None
    return train_step

  def batches():
    """The first GPT2_LIMIT_BATCHES batches of the training input."""
    with tf.Graph().as_default():
      dataset = model.train_input_fn({'batch_size': GPT2_BATCH_SIZE})
      next_batch = v1.data.make_one_shot_iterator(dataset).get_next()
      with v1.Session() as session:
        pairs = [session.run(next_batch) for _ in range(GPT2_LIMIT_BATCHES)]
    return (np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]))
  return Workload('gpt2-tiny', GPT2_BATCH_SIZE, step, model.train_input_fn,
                  batches, replica_step)


def make_workload(name):
  if name == 'mlp':
    return Workload(name, BATCH_SIZE, mlp_step, common.input_fn, mlp_batches,
                    mlp_replica_step)
  if name == 'host_call':
    return Workload(name, BATCH_SIZE, mlp_host_call_step, common.input_fn,
                    mlp_batches)
  if name == 'input-bound':
    return Workload(name, BATCH_SIZE, mlp_step, expensive_input_fn, None)
  if name == 'pipeline':  # The limit reads this pipeline inside its loop.
    return Workload(name, BATCH_SIZE, mlp_step, per_example_input_fn, None)
  if name == 'gpt2-tiny':
    return gpt2_workload()
  raise ValueError('unknown workload %r' % name)


# ------------------------------------------------------------------- runners
class EstimatorRunner(object):
  """tf.estimator.Estimator, one step per session.run (only where
  tensorflow-estimator is installed)."""

  def __init__(self, workload, model_dir):
    self._workload = workload
    config = compat.ESTIMATOR.RunConfig(
        model_dir=model_dir, save_checkpoints_steps=NEVER,
        save_summary_steps=NEVER, log_step_count_steps=NEVER)
    self._estimator = compat.ESTIMATOR.Estimator(
        lambda features, labels, mode, params: workload.estimator_model_fn(
            features, labels, mode),
        config=config, params={'batch_size': workload.batch_size})

  def train(self, steps):
    self._estimator.train(self._workload.input_fn, steps=steps)

  def global_step(self):
    return int(self._estimator.get_variable_value(v1.GraphKeys.GLOBAL_STEP))


class HookRunner(object):
  """hookestimator.HookEstimator at one iterations_per_loop; `model_fn`
  replaces the workload's own, and `num_replicas` replicas share the
  workload's batch (the global batch)."""

  def __init__(self, workload, model_dir, iterations_per_loop,
               model_fn=None, num_replicas=1):
    self._workload = workload
    config = he.RunConfig(model_dir=model_dir,
                          iterations_per_loop=iterations_per_loop,
                          save_checkpoints_steps=NEVER,
                          log_step_count_steps=NEVER,
                          num_replicas=num_replicas)
    self._estimator = he.HookEstimator(
        model_fn or workload.hook_model_fn, config=config,
        train_batch_size=workload.batch_size)

  def train(self, steps, hooks=None):
    self._estimator.train(self._workload.input_fn, steps=steps, hooks=hooks)

  def global_step(self):
    return int(self._estimator.get_variable_value(v1.GraphKeys.GLOBAL_STEP))


class KerasRunner(object):
  """Keras Model.fit of the same MLP (TF 2 only): the same initialisers,
  loss, optimizer and dataset; one compiled model, fit called per train.
  tf.keras is Keras 2 on TF 2.15 and Keras 3 from TF 2.16; the calls below
  mean the same on both."""

  def __init__(self, workload, model_dir, steps_per_execution):
    del model_dir  # Keras keeps no files here.
    keras = tf.keras
    # An Input layer rather than input_shape=, which Keras 3 deprecates.
    self._model = keras.Sequential([
        keras.Input(shape=(common.NUM_INPUTS,)),
        keras.layers.Dense(common.NUM_HIDDEN, activation='relu',
                           kernel_initializer=keras.initializers.GlorotUniform(
                               seed=1)),
        keras.layers.Dense(common.NUM_CLASSES,
                           kernel_initializer=keras.initializers.GlorotUniform(
                               seed=2)),
    ])
    # No XLA, like every other system: Keras 3's default ('auto') compiles
    # with XLA on a machine with a GPU; Keras 2's default never does.
    self._model.compile(
        optimizer=keras.optimizers.SGD(common.LEARNING_RATE),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        steps_per_execution=steps_per_execution, jit_compile=False)
    self._dataset = workload.input_fn({'batch_size': workload.batch_size})

  def train(self, steps):
    # shuffle=False: a dataset is never shuffled by fit, and Keras 3 warns.
    self._model.fit(self._dataset, steps_per_epoch=steps, epochs=1,
                    verbose=0, shuffle=False)

  def global_step(self):
    return int(self._model.optimizer.iterations.numpy())


class ReplicaRunner(HookRunner):
  """hookestimator with the replicas and gradient sums of `row`, one of
  REPLICA_SYSTEMS, training the workload's replica step. `parameters`: the
  model's trainable parameters, the size of each replica's gradients."""

  def __init__(self, row, workload, model_dir):
    count, sum_gradients, _ = REPLICA_SYSTEMS[row]
    step = workload.replica_step(sum_gradients)
    self.parameters = None

    def model_fn(features, labels, mode):
      loss, train_op, _ = step(features, labels)
      # The replica's own variables: each replica sees only its own here.
      self.parameters = sum(v.shape.num_elements()
                            for v in v1.trainable_variables())
      return he.HookEstimatorSpec(mode=mode, loss=loss, train_op=train_op)
    HookRunner.__init__(self, workload, model_dir, REPLICA_LOOP,
                        model_fn=model_fn, num_replicas=count)


class ReplicaGroup(object):
  """Every row of REPLICA_SYSTEMS for one workload, in one process, measured
  one after another in each repeat, in alternating order. On a shared
  2-core machine the speed drifts, often by 2x, over seconds: rows whose
  ratio is reported (above all, summed against not summed) must be timed
  as close together as possible, and in the same process."""

  def __init__(self, workload, model_dir):
    self.runners = collections.OrderedDict(
        (row, ReplicaRunner(row, workload, os.path.join(model_dir, row)))
        for row in REPLICA_SYSTEMS)
    self.trained = {row: 0 for row in self.runners}
    self._measures = 0

  def train(self, row, steps):
    """Trains row `row` `steps` steps; returns the call's wall time."""
    seconds = common.timed(self.runners[row].train, steps)
    self.trained[row] += steps
    return seconds

  def warmup(self, steps):
    return {row: self.train(row, steps) for row in self.runners}

  def measure(self, base, steps):
    """{row: the measure answer of a single system} for every row."""
    rows = list(self.runners)
    if self._measures % 2:
      rows.reverse()
    self._measures += 1
    answers = {}
    for row in rows:
      rate, base_seconds, long_seconds = common.marginal_rate(
          functools.partial(self.train, row), base, steps)
      answers[row] = {'base_seconds': base_seconds,
                      'long_seconds': long_seconds,
                      'rate': rate if rate == rate else None,
                      'global_step': self.runners[row].global_step(),
                      'trained': self.trained[row],
                      'parameters': self.runners[row].parameters}
    return answers


def _in_loop_scope():
  """Resource variables, so that variables made in a loop body are created
  outside it (as hookestimator's device loop does)."""
  return v1.variable_scope(v1.get_variable_scope(), use_resource=True)


class LimitRunner(object):
  """The same training step in one bare while_loop: no hooks, no host round
  trips; one session.run per train, the step count fed. The loop reads
  batches held as constants in the graph (no input pipeline) where the
  workload has them, else (the pipeline workload) the workload's own
  pipeline, one get_next per step."""

  def __init__(self, workload, model_dir):
    del model_dir
    self._graph = tf.Graph()
    init = []
    with self._graph.as_default():
      self._global_step = v1.get_variable(
          v1.GraphKeys.GLOBAL_STEP, shape=[], dtype=tf.int64,
          initializer=v1.zeros_initializer(), trainable=False,
          use_resource=True,
          collections=[v1.GraphKeys.GLOBAL_VARIABLES,
                       v1.GraphKeys.GLOBAL_STEP])
      if workload.batches is None:
        iterator = v1.data.make_initializable_iterator(
            workload.input_fn({'batch_size': workload.batch_size}))
        init.append(iterator.initializer)
        batch = lambda i: iterator.get_next()
      else:
        features, labels = workload.batches()
        all_features = tf.constant(features)
        all_labels = tf.constant(labels)
        batch = lambda i: (all_features[i % len(labels)],
                           all_labels[i % len(labels)])
      self._count = v1.placeholder(tf.int32, [], name='count')

      def body(i):
        _, train_op, _ = workload.step(*batch(i))
        with tf.control_dependencies([train_op]):
          return i + 1
      with _in_loop_scope():
        self._loop = v1.while_loop(lambda i: i < self._count, body,
                                   [tf.constant(0)], parallel_iterations=1)
      init.append(v1.global_variables_initializer())
    self._session = v1.Session(graph=self._graph)
    self._session.run(init)

  def train(self, steps):
    self._session.run(self._loop, {self._count: steps})

  def global_step(self):
    return int(self._session.run(self._global_step))


class OneStepRunner(object):
  """The same training step, one session.run per step from a Python for
  loop: the workload's own input_fn read by an iterator's get_next in the
  graph; no hooks, no MonitoredSession, no while_loop."""

  def __init__(self, workload, model_dir):
    del model_dir
    self._graph = tf.Graph()
    with self._graph.as_default():
      global_step = v1.train.create_global_step()
      iterator = v1.data.make_initializable_iterator(
          workload.input_fn({'batch_size': workload.batch_size}))
      _, self._train_op, _ = workload.step(*iterator.get_next())
      self._global_step = global_step
      init = [iterator.initializer, v1.global_variables_initializer()]
    self._session = v1.Session(graph=self._graph)
    self._session.run(init)

  def train(self, steps):
    run, train_op = self._session.run, self._train_op
    for _ in range(steps):
      run(train_op)

  def global_step(self):
    return int(self._session.run(self._global_step))


class InputAloneRunner(object):
  """The input pipeline alone: one while_loop pulling the batches from the
  dataset's iterator, nothing else."""

  def __init__(self, workload, model_dir):
    del model_dir
    self._graph = tf.Graph()
    with self._graph.as_default():
      dataset = workload.input_fn({'batch_size': workload.batch_size})
      iterator = v1.data.make_initializable_iterator(dataset)
      self._count = v1.placeholder(tf.int32, [], name='count')

      def body(i):
        batch = tf.nest.flatten(iterator.get_next())
        with tf.control_dependencies(batch):
          return i + 1
      self._loop = v1.while_loop(lambda i: i < self._count, body,
                                 [tf.constant(0)], parallel_iterations=1)
    self._session = v1.Session(graph=self._graph)
    self._session.run(iterator.initializer)
    self._batches = 0

  def train(self, steps):
    self._batches += int(self._session.run(self._loop, {self._count: steps}))

  def global_step(self):
    return self._batches


def make_runner(system, workload, model_dir):
  if system not in SYSTEMS:
    raise ValueError('system %r does not exist on TensorFlow %s' % (
        system, tf.__version__))
  if system == 'limit':
    return LimitRunner(workload, model_dir)
  if system == 'bare1':
    return OneStepRunner(workload, model_dir)
  if system == 'estimator':
    return EstimatorRunner(workload, model_dir)
  if system.startswith('keras'):
    return KerasRunner(workload, model_dir, int(system[len('keras'):]))
  if system.startswith('hook'):
    return HookRunner(workload, model_dir, int(system[len('hook'):]))
  if system == 'replicas':
    return ReplicaGroup(workload, model_dir)
  if system == 'input-alone':
    return InputAloneRunner(workload, model_dir)
  raise ValueError('unknown system %r' % system)


# --------------------------------------------------------------- the memory
class LoopSampler(v1.train.SessionRunHook):
  """Samples RSS and thread counts after every loop."""

  def __init__(self, iterations_per_loop, samples, start):
    self._iterations_per_loop = iterations_per_loop
    self._samples = samples
    self._start = start
    self._loops = 0

  def after_run(self, run_context, run_values):
    self._loops += 1
    self._samples.append(soak.sample(self._loops * self._iterations_per_loop,
                                     self._start))


def memory_run(model_dir, warmup_steps, steps):
  """One warm-up train() call, then one of `steps` steps sampled after
  every loop, with the 3-scalar host_call on, at iterations_per_loop 100."""
  runner = HookRunner(make_workload('host_call'), model_dir, 100)
  runner.train(warmup_steps)
  samples = []
  start = time.monotonic()
  runner.train(steps, hooks=[LoopSampler(100, samples, start)])
  return {'seconds': time.monotonic() - start, 'samples': samples}


# ---------------------------------------------------------------- the child
class Child(object):
  """One system, serving the workloads it is asked for."""

  def __init__(self, system, root):
    self.system = system
    self.root = root
    self.runners = {}
    self.trained = {}

  def runner(self, workload):
    if workload not in self.runners:
      if workload not in SYSTEMS[self.system][2]:
        raise ValueError('system %r does not serve workload %r' %
                         (self.system, workload))
      model_dir = os.path.join(self.root, workload)
      if workload in INFERENCE_WORKLOADS:
        self.runners[workload] = InferenceTimer(self.system, workload,
                                                model_dir)
      else:
        self.runners[workload] = make_runner(
            self.system, make_workload(workload), model_dir)
      self.trained[workload] = 0
    return self.runners[workload]

  def train(self, workload, steps):
    seconds = common.timed(self.runner(workload).train, steps)
    self.trained[workload] += steps
    return seconds

  def handle(self, command):
    cmd = command['cmd']
    if cmd == 'warmup':
      seconds = {}
      for workload in command['workloads']:
        runner = self.runner(workload)
        if isinstance(runner, ReplicaGroup):  # {row: seconds}
          seconds[workload] = runner.warmup(command['steps'][workload])
        elif isinstance(runner, InferenceTimer):
          seconds[workload] = runner.warmup()
        else:
          seconds[workload] = self.train(workload,
                                         command['steps'][workload])
      return {'seconds': seconds}
    if cmd == 'measure':
      workload = command['workload']
      runner = self.runner(workload)
      if isinstance(runner, InferenceTimer):
        return runner.measure()
      base, steps = command['base'], command['steps']
      if isinstance(runner, ReplicaGroup):
        return {'rows': runner.measure(base, steps)}
      rate, base_seconds, long_seconds = common.marginal_rate(
          lambda n: self.train(workload, n), base, steps)
      return {'base_seconds': base_seconds, 'long_seconds': long_seconds,
              'rate': rate if rate == rate else None,
              'global_step': self.runners[workload].global_step(),
              'trained': self.trained[workload]}
    if cmd == 'memory' and self.system == 'hook100':
      return memory_run(os.path.join(self.root, 'memory'), command['warmup'],
                        command['steps'])
    raise ValueError('unknown command %r' % cmd)


def serve(system, root):
  protocol = os.fdopen(os.dup(1), 'w')
  os.dup2(2, 1)  # Anything else printed goes to stderr.

  def answer(message):
    protocol.write(json.dumps(message) + '\n')
    protocol.flush()

  v1.logging.set_verbosity(v1.logging.ERROR)
  os.makedirs(root, exist_ok=True)
  try:
    child = Child(system, root)
    answer({'ok': True, 'ready': system, 'pid': os.getpid()})
    for line in sys.stdin:
      command = json.loads(line)
      if command['cmd'] == 'quit':
        break
      try:
        result = child.handle(command)
        result['ok'] = True
      except Exception:  # pylint: disable=broad-except
        result = {'ok': False, 'error': traceback.format_exc()}
      answer(result)
  finally:
    v1.summary.FileWriterCache.clear()
    shutil.rmtree(root, ignore_errors=True)


def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  if len(argv) != 2 or argv[0] not in SYSTEMS:
    sys.exit('usage: python -m bench.peer_systems SYSTEM MODEL_DIR_ROOT '
             '(SYSTEM one of %s on TensorFlow %s)' % (
                 ', '.join(sorted(SYSTEMS)), tf.__version__))
  serve(argv[0], argv[1])


if __name__ == '__main__':
  main()
