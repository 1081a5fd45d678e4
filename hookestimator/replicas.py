"""N replicas of the device loop on N devices, in one graph.

In-graph replication, as TPU replication works: one loop whose every step
runs model_fn once per replica, each on its own device and its own share of
the input. In training each replica has its own copy of the variables
(replica 0's are the real ones, saved in checkpoints; the others are local
variables named `replica_<r>/...`, set from replica 0's when the session
starts). Every replica applies the same summed gradients, so the copies
stay equal, and a checkpoint moves between runs with any number of
replicas. Evaluation and prediction only read variables: the replicas
share one copy.

The cross-replica sum off-TPU: while a replica's model_fn is built (and
only then), `tf.compat.v1.tpu.cross_replica_sum` and CrossShardOptimizer
(which calls it) get a stand-in instead of the TPU op, which has no CPU or
GPU kernel; once every replica is built, the k-th stand-ins of all
replicas are wired to the sum of their inputs. model_fn also runs inside
TPU's shard context with N shards, so CrossShardOptimizer scales its loss
by 1/N (its MEAN reduction) as on a TPU.
"""
import contextlib
import itertools

import tensorflow as tf
from tensorflow.python.framework import ops
from tensorflow.python.ops import collective_ops
from tensorflow.python.ops import gen_tpu_ops
from tensorflow.python.tpu import tpu_function
from tensorflow.python.tpu.ops import tpu_ops

from hookestimator import tpu_context
from hookestimator.compat import v1

REPLICA_SCOPE = 'replica_%d'
# Where a reading replica builds: apart from the training replicas' scopes,
# which a train_and_evaluate graph also holds.
READING_SCOPE = 'reading_replica_%d'
# The collections each replica's model_fn must see as its own: its global
# step, the variables its optimizer trains, its losses and update ops.
_PER_REPLICA_COLLECTIONS = (
    v1.GraphKeys.GLOBAL_STEP, v1.GraphKeys.TRAINABLE_VARIABLES,
    v1.GraphKeys.TRAINABLE_RESOURCE_VARIABLES, v1.GraphKeys.UPDATE_OPS,
    v1.GraphKeys.LOSSES, v1.GraphKeys.REGULARIZATION_LOSSES,
    v1.GraphKeys.SUMMARIES, v1.GraphKeys.MOVING_AVERAGE_VARIABLES)


def cross_replica_sum(x, name=None):
  """The sum of `x` over all replicas (`x` itself with one), as
  tf.compat.v1.tpu.cross_replica_sum, which a TPU program may call as it
  is; on a TPU it is that op."""
  return tpu_ops.cross_replica_sum(x, name=name)


def per_replica_batch(name, global_batch, count):
  """global_batch / count; a ValueError naming both when count does not
  divide it."""
  if global_batch % count:
    raise ValueError(
        '%s=%d cannot be split over %d replicas: the global batch must be '
        'divisible by the number of replicas' % (name, global_batch, count))
  return global_batch // count


def devices(kind, count):
  """The devices of `count` replicas of `kind` ('cpu' or 'gpu')."""
  return ['/device:%s:%d' % (kind.upper(), index) for index in range(count)]


# How one host's input_fn calls reach its replicas (TPUConfig's
# per_host_input_for_training): one call whose batches are split over them
# (PER_HOST_V1); one call whose consecutive batches go one to each
# (PER_HOST_V2); or one call per replica (PER_SHARD_V1, in training).
SPLIT = 'split'
EACH = 'each'
PER_REPLICA = 'per_replica'


class Plan(object):
  """How one mode's batches go over the replicas.

  Attributes:
    count: the number of replicas (on a cluster, of every worker).
    local_count: the replicas this process builds and runs.
    devices: one device per replica this process runs, or None for the
      device's default.
    layout: SPLIT, EACH or PER_REPLICA: how input_fn's batches reach the
      replicas.
    replica_batch: params['batch_size'] in model_fn: the global batch over
      the replicas.
    input_batch: params['batch_size'] in input_fn: the global batch when
      input_fn's batches are split (SPLIT), else the replica batch.
  """

  def __init__(self, kind, count, global_batch, name, layout=EACH,
               cluster=None):
    # With a cluster, `count` replicas on each worker.
    self.local_count = count
    self.workers = cluster.num_workers if cluster is not None else 1
    count *= self.workers
    self.count = count
    self.layout = layout
    if cluster is not None:
      self.devices = cluster.replica_devices(kind, self.local_count)
    else:
      self.devices = None if count == 1 else devices(kind, count)
    self.replica_batch = per_replica_batch(name, global_batch, count)
    self.input_batch = (self.replica_batch * self.local_count
                        if self.split_batches else self.replica_batch)

  @property
  def split_batches(self):
    return self.layout == SPLIT

  def input_calls(self, host=0, hosts=None, device=None):
    """The tpu_context.InputCalls of host `host`'s input_fn calls (on its
    CPU, `device`), of `hosts` hosts (the workers by default): one per
    replica with PER_REPLICA, else one."""
    args = (hosts or self.workers, self.local_count, host) + (
        (device,) if device is not None else ())
    if self.layout == PER_REPLICA:
      return tpu_context.per_replica_calls(*args)
    return [tpu_context.one_call(*args)]

  def replicate_input(self, datasets):
    """One host's input as one dataset whose elements are [local count,
    ...] stacks, one slice a replica: `datasets` holds its input_fn calls'
    datasets, one (SPLIT, EACH) or one per replica (PER_REPLICA)."""
    if len(datasets) > 1:
      return v1.data.Dataset.zip(tuple(datasets)).map(stack_elements)
    return split_input(datasets[0], self.local_count, self.split_batches)

  def check_devices(self, found):
    """Raises unless `found` (the device kind's devices) has one device per
    replica."""
    if self.local_count > len(found):
      raise ValueError(
          'num_replicas=%d needs %d devices of this kind; this machine has '
          '%d (%s)' % (self.local_count, self.local_count, len(found),
                       ', '.join(found)))


def stack_elements(*elements):
  """Elements of one structure, one per replica, as one [replicas, ...]
  stack."""
  return tf.nest.map_structure(lambda *parts: tf.stack(parts), *elements)


def split_input(dataset, count, split_batches):
  """`dataset`'s elements as [count, ...] stacks, one slice per replica.

  With `split_batches` each element is one global batch, split along its
  first axis (TPUEstimator's PER_HOST_V1); without, `count` consecutive
  elements are stacked, each a replica's batch (PER_HOST_V2)."""
  if count == 1:
    return dataset
  if not split_batches:
    return dataset.batch(count, drop_remainder=True)
  check_splittable(v1.data.get_output_shapes(dataset), count)

  def split(*element):
    element = element if len(element) > 1 else element[0]
    return split_batch(element, count)
  return dataset.map(split)


def check_splittable(shapes, count):
  """Raises unless every shape in the structure `shapes` has a static
  leading batch dimension that `count` divides (PER_HOST_V1)."""
  for shape in tf.nest.flatten(shapes):
    rows = tf.compat.dimension_value(shape[0]) if shape.ndims else None
    if rows is None or rows % count:
      raise ValueError(
          'An input_fn batch of shape %s cannot be split over %d replicas: '
          'with per-host input (PER_HOST_V1) every component needs a static '
          'leading batch dimension that the number of replicas divides; '
          'use InputPipelineConfig.PER_HOST_V2 for batches of any layout'
          % (shape, count))


def split_batch(element, count):
  """Each tensor of `element`, one global batch, as a [count, rows / count,
  ...] stack (check_splittable first)."""
  return tf.nest.map_structure(
      lambda t: tf.reshape(t, [count, -1] + t.shape[1:].as_list()), element)


def unstack(element, count):
  """The list of `count` per-replica structures of a stacked element."""
  if count == 1:
    return [element]
  # None (the labels of input without any) is None in every replica.
  flat = [None if t is None else tf.unstack(t, count)
          for t in tf.nest.flatten(element)]
  return [tf.nest.pack_sequence_as(
      element, [None if parts is None else parts[index] for parts in flat])
          for index in range(count)]


def concat_host_calls(host_calls):
  """One replica's host_call `(fn, tensors)` with each tensor concatenated
  along its first axis over all replicas' host_calls, in replica order."""
  fn, tensors = host_calls[0]
  if len(host_calls) == 1:
    return fn, tensors
  if isinstance(tensors, dict):
    return fn, {key: tf.concat([h[1][key] for h in host_calls], 0)
                for key in tensors}
  return fn, [tf.concat(list(parts), 0)
              for parts in zip(*[h[1] for h in host_calls])]


def gather_host_calls(host_calls, devices_, group_size):
  """This task's replicas' host_calls as one `(fn, tensors)` whose every
  tensor is the concatenation over all `group_size` replicas of the
  cluster (an all-gather)."""
  fn, first = host_calls[0]
  keys = sorted(first) if isinstance(first, dict) else None
  columns = ([[h[1][k] for h in host_calls] for k in keys] if keys else
             [list(parts) for parts in zip(*[h[1] for h in host_calls])])
  gathered = [collective_concat(parts, devices_, COLLECTIVE_GROUP_KEY,
                                group_size)[0] for parts in columns]
  return fn, (dict(zip(keys, gathered)) if keys else gathered)


def concat_outfed(per_replica, weights):
  """Each replica's list of outfed tensors combined position by position:
  concatenated along the first axis, scalars (a loss) averaged with the
  replicas' `weights` (how many real examples each saw)."""
  if len(per_replica) == 1:
    return list(per_replica[0])
  total = tf.maximum(tf.add_n(weights), 1.0)
  combined = []
  for parts in zip(*per_replica):
    if parts[0].shape.ndims == 0:
      combined.append(tf.add_n([tf.cast(p, tf.float32) * w
                                for p, w in zip(parts, weights)]) / total)
    else:
      combined.append(tf.concat(list(parts), 0))
  return combined


# The collective group of a cluster's replicas (one group: every replica).
COLLECTIVE_GROUP_KEY = 1
# Collective instance keys, unique in the process: a server keeps each
# instance's shape for its lifetime (across groups on TF 1.15).
_instance_keys = itertools.count(1)


def next_instance_key():
  """A collective instance key no graph of this process used before."""
  return next(_instance_keys)


def collective_sum(values, devices_, group_key, instance_key,
                   group_size=None, merge_op='Add'):
  """The sum of `values` (one per device of `devices_`, this task's part
  of a group of `group_size` devices, all of them by default) over the
  whole group, on each device, by TensorFlow's collective all-reduce (a
  ring over the devices, across tasks through the gRPC runtime); the
  tasks' servers need `collective_group_leader` set
  (task_server.server_config). `merge_op` 'Max' gives the maximum."""
  sums = []
  for value, device in zip(values, devices_):
    with tf.device(device):
      sums.append(collective_ops.all_reduce(
          tf.convert_to_tensor(value), group_size or len(devices_),
          group_key, instance_key, merge_op, 'Id'))
  return sums


def collective_concat(values, devices_, group_key, group_size):
  """Each value of `values` (one per device of `devices_`, this task's
  part of a group of `group_size`) concatenated along its first axis over
  the whole group, in the group's device order, on each device."""
  instance_key = next_instance_key()
  gathered = []
  for value, device in zip(values, devices_):
    with tf.device(device):
      gathered.append(collective_ops.all_gather(
          tf.convert_to_tensor(value), group_size, group_key, instance_key))
  return gathered


class CrossReplicaSums(object):
  """The cross-replica sums of `count` replicas, this process building
  those on `devices_` inside `recording()`.

  With `collective` (a cluster's replicas, each task building its own)
  each sum is a collective all-reduce over all `count`; else this process
  builds them all, and each sum is the add_n of every replica's input on
  the first replica's device, copied to each."""

  def __init__(self, count, devices_, collective=False):
    self._count = count
    self._devices = devices_
    self._collective = collective
    self._by_replica = []

  @contextlib.contextmanager
  def recording(self, replica):
    """Builds replica `replica`'s model_fn: its cross_replica_sum calls
    make stand-ins, recorded in call order."""
    if replica != len(self._by_replica):
      raise ValueError('Replicas are built in order; got replica %d after %d'
                       % (replica, len(self._by_replica)))
    records = []
    self._by_replica.append(records)
    real = gen_tpu_ops.cross_replica_sum

    def stand_in(input, group_assignment, name=None):  # pylint: disable=redefined-builtin
      del name
      self._check_groups(group_assignment)
      result = tf.identity(input, name='cross_replica_sum')
      records.append((input, result))
      return result
    gen_tpu_ops.cross_replica_sum = stand_in
    try:
      with tpu_function.tpu_shard_context(self._count):
        yield
    finally:
      gen_tpu_ops.cross_replica_sum = real

  def _check_groups(self, group_assignment):
    groups = tf.get_static_value(group_assignment)
    if groups is not None and [list(g) for g in groups] != [
        list(range(self._count))]:
      raise ValueError(
          'cross_replica_sum with group_assignment %s cannot be honoured: '
          'off a TPU every sum runs over all %d replicas' %
          (groups.tolist(), self._count))

  @property
  def count(self):
    """How many sums each replica made."""
    return len(self._by_replica[0]) if self._by_replica else 0

  def wire(self):
    """Wires every replica's k-th sum to the sum over replicas of their
    k-th inputs, computed on the first replica's device."""
    counts = [len(records) for records in self._by_replica]
    if len(set(counts)) > 1:
      raise ValueError('The replicas made different numbers of '
                       'cross_replica_sum calls: %s; model_fn must build '
                       'the same graph in every replica' % counts)
    if self._count == 1:
      return
    for sums in zip(*self._by_replica):
      if self._collective:
        totals = collective_sum([value for value, _ in sums], self._devices,
                                COLLECTIVE_GROUP_KEY, next_instance_key(),
                                group_size=self._count)
      else:
        with tf.device(self._devices[0]):
          total = tf.add_n([tf.convert_to_tensor(value) for value, _ in sums])
        totals = [total] * self._count
      for index, (_, stand_in) in enumerate(sums):
        with tf.device(self._devices[index]):
          local = tf.identity(totals[index])
        for consumer in list(stand_in.consumers()):
          for position, tensor in enumerate(consumer.inputs):
            if tensor is stand_in:
              consumer._update_input(position, local)  # pylint: disable=protected-access


@contextlib.contextmanager
def _own_collections(graph, values):
  """The collections in `values` hold only the given items while inside;
  what was added to them inside is dropped on the way out."""
  saved = {}
  for key in _PER_REPLICA_COLLECTIONS:
    ref = graph.get_collection_ref(key)
    saved[key] = list(ref)
    ref[:] = values.get(key, [])
  try:
    yield
  finally:
    for key, items in saved.items():
      graph.get_collection_ref(key)[:] = items


def top_level_names():
  """The name scope of the graph's top level, where Estimator builds
  model_fn: a layer whose variables take its name scope's name (Keras on
  TF 1.x) names them as in a graph of its own, not after the loop."""
  return v1.get_default_graph().name_scope(None)


def _describe_variable(variable):
  return '%s (shape %s, %s)' % (variable.op.name, variable.shape,
                                variable.dtype.base_dtype.name)


def _check_same_kind(index, who, kwargs, original):
  """Raises unless the variable `kwargs` ask for could be `original`."""
  dtype = kwargs.get('dtype')
  shape = kwargs.get('shape')
  wrong_dtype = dtype is not None and (
      tf.as_dtype(dtype).base_dtype != original.dtype.base_dtype)
  wrong_shape = shape is not None and not tf.TensorShape(
      shape).is_compatible_with(original.shape)
  if wrong_dtype or wrong_shape:
    raise ValueError(
        '%s made its variable %d as %s (shape %s, dtype %s), where '
        'replica 0 made %s; model_fn must make the same variables, in the '
        'same order, in every replica' % (
            who, index, kwargs.get('name'), shape, dtype,
            _describe_variable(original)))


@contextlib.contextmanager
def _creator_scope(creator):
  """`creator` sees every variable made inside, also those that
  tf.init_scope lifts out of a TF 2.x loop body's function graph into
  the graphs around it (optimizer slots): each graph keeps its own
  creators, so the scope is entered in every one of them."""
  with contextlib.ExitStack() as stack:
    graph = v1.get_default_graph()
    while graph is not None:
      stack.enter_context(graph._variable_creator_scope(creator))  # pylint: disable=protected-access
      graph = getattr(graph, 'outer_graph', None)
    yield


@contextlib.contextmanager
def recording_variables(into):
  """Appends every variable made inside (get_variable, tf.Variable, Keras
  and tf.compat.v1.layers alike) to the list `into`, in creation order."""
  def creator(next_creator, **kwargs):
    variable = next_creator(**kwargs)
    into.append(variable)
    return variable
  with _creator_scope(creator):
    yield


@contextlib.contextmanager
def reusing_variables(variables, who, scope, taken=None):
  """Inside, the k-th variable made is `variables[k]` itself: a replica
  that only reads shares replica 0's variables, matched by the order in
  which model_fn makes them, since their names differ wherever model_fn
  relies on default names (Keras layers, unnamed tf.compat.v1.layers,
  variable_scope(None, default_name=...)), which the graph numbers
  anew for each replica. `variables` may hold None where no variable is
  to be shared: that one is made as asked. `who` names the replica in
  errors; `scope` is the variable scope it builds in, its own, so that
  names model_fn gives explicitly do not collide with existing ones in
  the variable store. Each variable it gives is appended to `taken`."""
  taken = [] if taken is None else taken

  def creator(next_creator, **kwargs):
    index = len(taken)
    if index >= len(variables):
      raise ValueError(
          '%s made more variables than replica 0 (%d), the next being %s; '
          'model_fn must make the same variables in every replica' % (
              who, len(variables), kwargs.get('name')))
    original = variables[index]
    if original is None:
      variable = next_creator(**kwargs)
    else:
      _check_same_kind(index, who, kwargs, original)
      variable = original
    taken.append(variable)
    return variable
  with v1.variable_scope(scope), _creator_scope(creator):
    yield
  if len(taken) != len(variables):
    raise ValueError(
        '%s made %d variables, replica 0 made %d; model_fn must make the '
        'same variables in every replica' % (who, len(taken),
                                              len(variables)))


class SharedVariables(object):
  """The replicas of an evaluation or prediction loop read one copy of
  the variables: replica 0 makes them (or, with `targets`, takes those
  already in the graph), the others reuse them in creation order."""

  def __init__(self, targets=None):
    self._targets = targets
    self._variables = []

  @contextlib.contextmanager
  def replica(self, index):
    if index > 0:
      with reusing_variables(self._variables, 'Replica %d' % index,
                             READING_SCOPE % index):
        yield
    elif self._targets is not None:
      with reusing_variables(self._targets, 'This loop\'s replica 0',
                             READING_SCOPE % index, self._variables):
        yield
    else:
      with recording_variables(self._variables):
        yield


def variables_in_graph(call_model_fn, features, labels, mode):
  """For each variable that model_fn makes in `mode`, in order, the
  variable of the same name in the default graph, or None.

  A loop built in a graph that already holds the model (the evaluation
  rounds of train_and_evaluate, inside the training graph) must use the
  variables there. The names model_fn's variables get in a graph of their
  own (the checkpoint's names) are found by building model_fn once in a
  scratch graph, since in a graph already holding the model, default
  names come out numbered (dense_1, bert_1)."""
  graph = v1.get_default_graph()
  by_name = {v.op.name: v for v in graph.get_collection(
      v1.GraphKeys.GLOBAL_VARIABLES)}
  made = []
  with tf.Graph().as_default() as scratch:
    scratch.seed = graph.seed

    def placeholder(tensor):
      if tensor is None:  # No labels.
        return None
      if isinstance(tensor, tf.SparseTensor):
        return v1.sparse_placeholder(tensor.dtype, tensor.dense_shape.shape)
      return v1.placeholder(tensor.dtype, tensor.shape)
    features, labels = tf.nest.map_structure(placeholder, (features, labels))
    v1.train.create_global_step(scratch)
    with recording_variables(made):
      call_model_fn(features, labels, mode)
  return [by_name.get(variable.op.name) for variable in made]


class MirroredVariables(object):
  """Each training replica but the first builds its own copy of the
  variables, whose initialiser reads the first replica's variable (so the
  copies are set from replica 0's, restored or initialised, when the
  session's local initialisers run). The copies are matched to replica 0's
  variables by the order model_fn makes them (the names of default-named
  layers differ between replicas). Where replica 0's variable is itself
  local (a metric's), the copy keeps its own initialiser.

  A copy made from its own initialiser and then assigned replica 0's
  value would build (and run) each initialiser N times over for values
  that are thrown away; reading replica 0's variable is one op."""

  def __init__(self):
    self._originals = []
    # Every copy made (the replicas' global steps included): running
    # their initialisers again sets them from replica 0's variables.
    self.copies = []

  @contextlib.contextmanager
  def first(self):
    """Builds replica 0, whose variables are the real ones."""
    with recording_variables(self._originals):
      yield

  @contextlib.contextmanager
  def replica(self, index, global_step):
    """Builds replica `index` (> 0): its variables are local copies named
    replica_<index>/..., and its global step a copy of `global_step`.
    Yields the replica's global step."""
    graph = v1.get_default_graph()
    before = set(id(v) for v in v1.global_variables())
    made = []
    with v1.variable_scope(REPLICA_SCOPE % index):
      with _initialised_from([global_step], [], global_ids=before):
        step = v1.get_variable(
            'global_step', shape=[], dtype=tf.int64,
            initializer=v1.zeros_initializer(), trainable=False,
            use_resource=True, collections=[v1.GraphKeys.LOCAL_VARIABLES])
      with _own_collections(graph, {v1.GraphKeys.GLOBAL_STEP: [step]}), \
          _initialised_from(self._originals, made, global_ids=before):
        yield step
    if len(made) != len(self._originals):
      raise ValueError(
          'Replica %d made %d variables, replica 0 made %d; model_fn must '
          'make the same variables in every replica' % (
              index, len(made), len(self._originals)))
    for position, (copy, original) in enumerate(zip(made, self._originals)):
      if (copy.dtype.base_dtype != original.dtype.base_dtype or
          not copy.shape.is_compatible_with(original.shape)):
        raise ValueError(
            'Replica %d made its variable %d as %s, where replica 0 made '
            '%s; model_fn must make the same variables, in the same order, '
            'in every replica' % (index, position, _describe_variable(copy),
                                  _describe_variable(original)))
    self.copies.extend([step] + made)
    global_ref = graph.get_collection_ref(v1.GraphKeys.GLOBAL_VARIABLES)
    moved = [v for v in global_ref if id(v) not in before]
    global_ref[:] = [v for v in global_ref if id(v) in before]
    graph.get_collection_ref(v1.GraphKeys.LOCAL_VARIABLES).extend(moved)


def _same_kind(kwargs, original):
  """Whether the variable `kwargs` ask for could be `original`."""
  dtype = kwargs.get('dtype')
  shape = kwargs.get('shape')
  if dtype is not None and (
      tf.as_dtype(dtype).base_dtype != original.dtype.base_dtype):
    return False
  if shape is None:
    shape = _initial_shape(kwargs.get('initial_value'))
  return shape is None or tf.TensorShape(shape).is_compatible_with(
      original.shape)


def _initial_shape(initial_value):
  """The shape of the variable an initial value (or its function) makes.
  TF 1.x's get_variable gives a creator no shape, only a function with
  the shape inside: it is built in a graph of its own, which keeps the
  model's graph free of an initialiser that would never run. One that
  reads the model's own tensors is built, unrun, where a variable's
  initialiser would be."""
  if not callable(initial_value):
    return getattr(initial_value, 'shape', None)
  try:
    with tf.Graph().as_default():
      return initial_value().shape
  except (ValueError, TypeError):
    with ops.init_scope():
      return initial_value().shape


def _reader(original):
  """An initial value function reading `original` where it lives: a
  variable's initial value is built colocated with the new variable,
  and a read of another device's variable cannot be."""
  def initial_value():
    with ops.colocate_with(original.op, ignore_existing=True):
      return original.read_value()
  return initial_value


@contextlib.contextmanager
def _initialised_from(originals, into, global_ids):
  """The k-th variable made inside (appended to `into`) starts from the
  value of `originals[k]` when that is a global variable (its id in
  `global_ids`) of the same kind: its initialiser reads the original
  instead of building one of its own (a random draw the value would
  replace). Others are made as asked, and checked by the caller."""
  def creator(next_creator, **kwargs):
    index = len(into)
    if index < len(originals):
      original = originals[index]
      if id(original) in global_ids and _same_kind(kwargs, original):
        kwargs['initial_value'] = _reader(original)
    variable = next_creator(**kwargs)
    into.append(variable)
    return variable
  with _creator_scope(creator):
    yield
