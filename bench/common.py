"""What the benchmarks share: the MLP model and its data, the marginal-rate
System, the machine description and small helpers.

The MLP (64 inputs -> 256 relu -> 10 logits, plain SGD lr 0.05, batch 64)
is built from tf.compat.v1.get_variable and plain tf ops (resource
variables on both TensorFlow lines) and trained on 4096 random-but-fixed
examples, held in memory already cut into batches and served by
`Dataset.from_tensor_slices(batches).repeat()`: about 15 us per batch.
(Batching single rows each step, `.repeat().batch(64)`, costs about 70 us
per batch on one core, nearly as much as the step itself, so every system
would measure its input pipeline rather than its per-step overhead. The
input-bound workload of bench.peers measures feeding on its own.)
"""
from __future__ import absolute_import, division, print_function

import gc
import os
import platform
import statistics
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from hookestimator import compat  # noqa: E402

v1 = tf.compat.v1

# tensorflow-estimator ended with TF 2.15: on later lines tf.estimator does
# not exist, so the benchmarks have no Estimator systems there.
HAS_ESTIMATOR = compat.ESTIMATOR is not None


def no_estimator_note(what):
  """The report's line saying why there are no Estimator `what`."""
  return ('Note: tf.estimator does not exist on this line (TensorFlow %s, '
          'no tensorflow-estimator), so there are no tf.estimator.Estimator '
          '%s.' % (tf.__version__, what))


BATCH_SIZE = 64
NUM_EXAMPLES = 4096
NUM_INPUTS = 64
NUM_HIDDEN = 256
NUM_CLASSES = 10
LEARNING_RATE = 0.05
NEVER = 10 ** 9  # "every this many steps" that never comes in a benchmark


def make_data(seed=0, num_examples=NUM_EXAMPLES):
  """Random inputs and labels from a random linear teacher (learnable)."""
  rng = np.random.RandomState(seed)
  features = rng.normal(size=(num_examples, NUM_INPUTS)).astype(np.float32)
  teacher = rng.normal(size=(NUM_INPUTS, NUM_CLASSES)).astype(np.float32)
  labels = np.argmax(features.dot(teacher), axis=1).astype(np.int32)
  return features, labels


DATA = make_data()


def data_batches(batch_size):
  """DATA cut into whole batches: ([n, batch, inputs], [n, batch])."""
  features, labels = DATA
  count = len(labels) // batch_size
  return (features[:count * batch_size].reshape(count, batch_size, -1),
          labels[:count * batch_size].reshape(count, batch_size))


def input_fn(params):
  """DATA in batches of params['batch_size'] examples, repeated."""
  return tf.data.Dataset.from_tensor_slices(
      data_batches(params['batch_size'])).repeat()


def mlp_variables():
  """(w1, b1, w2, b2) of the MLP, made (or reused) in the current scope."""
  with v1.variable_scope('mlp', use_resource=True):
    w1 = v1.get_variable(
        'w1', [NUM_INPUTS, NUM_HIDDEN],
        initializer=v1.glorot_uniform_initializer(seed=1))
    b1 = v1.get_variable('b1', [NUM_HIDDEN],
                         initializer=v1.zeros_initializer())
    w2 = v1.get_variable(
        'w2', [NUM_HIDDEN, NUM_CLASSES],
        initializer=v1.glorot_uniform_initializer(seed=2))
    b2 = v1.get_variable('b2', [NUM_CLASSES],
                         initializer=v1.zeros_initializer())
  return w1, b1, w2, b2


def mlp_logits(features):
  """The MLP's logits of `features`, its variables made or reused."""
  w1, b1, w2, b2 = mlp_variables()
  hidden = tf.nn.relu(tf.matmul(features, w1) + b1)
  return tf.matmul(hidden, w2) + b2


def mlp_loss(labels, logits):
  return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=labels, logits=logits))


def mlp_logits_loss_and_train_op(features, labels, wrap_optimizer=None):
  """The shared model: returns (logits, loss, train_op). `wrap_optimizer`,
  if given, wraps the SGD optimizer (the replica rows pass
  CrossShardOptimizer)."""
  logits = mlp_logits(features)
  loss = mlp_loss(labels, logits)
  optimizer = v1.train.GradientDescentOptimizer(LEARNING_RATE)
  if wrap_optimizer is not None:
    optimizer = wrap_optimizer(optimizer)
  train_op = optimizer.minimize(loss,
                                global_step=v1.train.get_global_step())
  return logits, loss, train_op


def timed(train, steps):
  """The wall time of train(steps), after a garbage collection."""
  gc.collect()
  start = time.monotonic()
  train(steps)
  return time.monotonic() - start


def marginal_rate(train, base_steps, steps):
  """Steps/sec of `steps` more steps: a call of base_steps and one of
  base_steps + steps, so fixed per-call costs cancel. `train(n)` trains n
  steps and returns its wall time. Returns (rate, NaN when the long call
  was not longer; base call seconds; long call seconds)."""
  base = train(base_steps)
  long_call = train(base_steps + steps)
  delta = long_call - base
  return (steps / delta if delta > 0 else float('nan')), base, long_call


class System(object):
  """One trainer under test, in a model_dir of its own."""

  def __init__(self, name, iterations_per_loop, estimator, input_fn=input_fn):
    self.name = name
    self.iterations_per_loop = iterations_per_loop
    self.estimator = estimator
    self.input_fn = input_fn
    self.steps_trained = 0
    self.warmup_seconds = None
    self.rates = []
    self.fixed_costs = []

  def train(self, steps):
    """Trains `steps` steps; returns the wall time of the train() call."""
    seconds = timed(lambda n: self.estimator.train(self.input_fn, steps=n),
                    steps)
    self.steps_trained += steps
    return seconds

  def marginal_rate(self, base_steps, steps):
    """marginal_rate(self.train, ...), the rate appended to `rates`."""
    rate, base, long_call = marginal_rate(self.train, base_steps, steps)
    self.rates.append(rate)
    return rate, base, long_call

  def global_step(self):
    return int(self.estimator.get_variable_value(v1.GraphKeys.GLOBAL_STEP))


def _package_version(name):
  """The installed version of distribution `name`, or None."""
  try:
    # importlib.metadata from Python 3.8; pkg_resources (setuptools, which
    # a Python 3.12 venv lacks) on 3.7.
    from importlib import metadata  # pylint: disable=g-import-not-at-top
    try:
      return metadata.version(name)
    except metadata.PackageNotFoundError:
      return None
  except ImportError:
    pass
  try:
    import pkg_resources  # pylint: disable=g-import-not-at-top
    return pkg_resources.get_distribution(name).version
  except Exception:  # pylint: disable=broad-except
    return None


def _cpu_model():
  try:
    with open('/proc/cpuinfo') as cpuinfo:
      for line in cpuinfo:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except (IOError, OSError):
    pass
  return platform.processor() or 'unknown'


def describe_machine():
  usable = (len(os.sched_getaffinity(0))
            if hasattr(os, 'sched_getaffinity') else os.cpu_count())
  if HAS_ESTIMATOR:
    estimator = 'tensorflow-estimator %s' % (
        _package_version('tensorflow-estimator') or 'unknown')
  else:
    estimator = 'no tensorflow-estimator: tf.estimator does not exist'
  return [
      'TensorFlow %s (%s), Python %s' % (
          tf.__version__, estimator, platform.python_version()),
      'Machine: %s; CPU: %s; CPU count: %s (usable: %s)' % (
          platform.platform(), _cpu_model(), os.cpu_count(), usable),
  ]


def fmt(value, pattern):
  """`pattern % value`, or 'n/a' for None and NaN."""
  return 'n/a' if value is None or value != value else pattern % value


def median(values):
  """The median of the values that are numbers (NaN where none is)."""
  values = [v for v in values if v == v]
  return statistics.median(values) if values else float('nan')


def require_positive(parser, args, names):
  """Exits through parser.error naming the first of `names` that is not
  positive."""
  for name in names:
    if getattr(args, name) <= 0:
      parser.error('--%s must be positive' % name.replace('_', '-'))
