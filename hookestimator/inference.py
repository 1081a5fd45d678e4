"""The device loop for evaluation and prediction, and the hook that sizes it.

Evaluation and prediction use the training machinery (feeds, controllers,
InfeedOutfeedHook, error rendezvous) with a loop of their own: no train_op,
and the global step does not move. The input is padded on the host (see
padding.py); each step dequeues a padded batch and its row states, runs
model_fn in EVAL or PREDICT mode (one replica off a TPU: on the batch's
real rows only) and outfeeds [row states, *values]. The
loop reports whether it saw a batch past the end of the input, and the
loop-size hook stops after that loop.

Also here: what evaluation and prediction share when they start (their
hooks argument, the checkpoint to read, the session creator).
"""
import contextlib
import logging
import os

import tensorflow as tf

from hookestimator import compat
from hookestimator import config as config_lib
from hookestimator import devices
from hookestimator import device_feeds
from hookestimator import hooks as hooks_lib
from hookestimator import loop as loop_lib
from hookestimator import padding
from hookestimator import replicas as replicas_lib
from hookestimator import signatures
from hookestimator import spec as spec_lib
from hookestimator import tensor_input
from hookestimator.compat import v1
from hookestimator.controller import ErrorRendezvous

log = logging.getLogger(__name__)


class InferenceLoop(object):
  """The built EVAL or PREDICT loop.

  `outfed_fn(spec)` validates the spec and returns the tensors each step
  sends back after its row states. With `reuse` the graph already holds
  the model's variables (the training graph): the loop reads those. With
  `trim_to` (the padded batch size; one replica off a TPU) model_fn runs
  on each batch's real rows only, and what it returns is padded back to
  `trim_to` rows for the outfeed (padding.trim).

  Attributes:
    iterations: int32 placeholder, the number of steps this run.
    stopped: int32, 1 once the loop has dequeued a batch past the end of
      the input; fetch it (it runs the loop) once per loop.
    spec: the HookEstimatorSpec the model_fn returned.
  """

  def __init__(self, infeed, outfeed, call_model_fn, device, mode, outfed_fn,
               reuse=False, replica_devices=None, trim_to=None):
    self.iterations = v1.placeholder(tf.int32, [], name='iterations')
    self.spec = None
    off_tpu = device.kind != 'tpu'
    replica_devices = replica_devices or [device.model_device]
    count = len(replica_devices)

    def replica(index, sums, shared):
      stack = contextlib.ExitStack()
      stack.enter_context(replicas_lib.top_level_names())
      if off_tpu:
        stack.enter_context(tf.device(replica_devices[index]))
        stack.enter_context(sums.recording(index))
      # Reading only: the replicas share one copy of the variables.
      stack.enter_context(shared.replica(index))
      return stack

    def step(i, stopped):
      with tf.control_dependencies([i]):
        element = infeed.dequeue()
      sums = replicas_lib.CrossReplicaSums(count, replica_devices)
      shared = None
      outfed = []
      for index, (inputs, state) in enumerate(
          replicas_lib.unstack(element, count)):
        features, labels = padding.unpack_inputs(inputs)
        if trim_to is not None:
          rows = padding.rows_to_run(state, trim_to)
          features, labels = padding.trim((features, labels), rows)
        if shared is None:
          shared = replicas_lib.SharedVariables(
              replicas_lib.variables_in_graph(call_model_fn, features,
                                              labels, mode)
              if reuse else None)
        with replica(index, sums, shared):
          spec = spec_lib.as_hook_spec(call_model_fn(features, labels, mode))
          values = list(outfed_fn(spec))
          if trim_to is not None:
            # The loss is a scalar; the rest has one row per example.
            values = [padding.untrim(v, rows, trim_to) if v.shape.ndims
                      else v for v in values]
          outfed.append([state] + values)
        if index == 0:
          self.spec = spec
      if off_tpu:
        sums.wire()
      if self.spec.host_call is not None:
        log.info('host_call runs in training only; %s does not run it',
                 'evaluation' if mode == compat.ModeKeys.EVAL else
                 'prediction')
      with (tf.device(replica_devices[0]) if off_tpu and replica_devices[0]
            else contextlib.nullcontext()):
        combined = replicas_lib.concat_outfed(
            outfed, weights=[tf.reduce_sum(tf.cast(tf.equal(
                values[0], padding.REAL), tf.float32)) for values in outfed])
        state = combined[0]
        enqueue = outfeed.enqueue(combined)
      with tf.control_dependencies([enqueue]):
        past_end = tf.cast(tf.equal(state[0], padding.PAST_END), tf.int32)
        return i + 1, tf.maximum(stopped, past_end)

    def device_loop(iterations):
      return v1.while_loop(
          lambda i, _: i < iterations, step,
          [tf.constant(0), tf.constant(0)],
          parallel_iterations=1, name='%s_loop' % mode)

    self.steps_done, self.stopped = loop_lib.run_on_device(
        device, device_loop, self.iterations)
    outfeed.build_host_ops()


class InferencePipeline(object):
  """The device side of one evaluation or prediction: the padded input,
  its feeds and the loop.

  Build it in the graph that will run it, with `dataset` made on the host.
  """

  def __init__(self, dataset, plan, device, call_model_fn, mode,
               outfed_fn, feeding, reuse=False):
    """`dataset`: input_fn's result, a Dataset or tensors (tensor_input).
    `plan`: a replicas.Plan; input_fn's batches have plan.input_batch
    rows (where they have a batch axis), model_fn's plan.replica_batch.
    `feeding`: the feeding path (RunConfig.feeding) of a Dataset."""
    if tensor_input.is_tensor_input(dataset):
      features, labels = tensor_input.parse(dataset)
      self.pads = padding.check_shapes(tf.nest.map_structure(
          lambda t: t.shape, (features, labels) if labels is not None
          else features), plan.input_batch)
      self.has_labels = labels is not None
      with tf.device(device_feeds.HOST_DEVICE):
        element, past_end = padding.pad_tensors(
            features, labels, plan.input_batch, self.pads)
        self.infeed = tensor_input.make_infeed(device.kind, element, plan,
                                               past_end)
      self.outfeed = device_feeds.make_outfeed(device.kind)
    else:
      self.pads = padding.check_input(dataset, plan.input_batch)
      with tf.device(device_feeds.HOST_DEVICE):
        padded, self.has_labels = padding.pad_dataset(
            dataset, plan.input_batch, self.pads)
        padded = plan.replicate_input([padded])
      self.infeed, self.outfeed = device_feeds.make_feeds(device.kind, padded,
                                                   feeding)
    # One replica off a TPU runs a short batch as it is, as Estimator does;
    # a TPU program, and replicas taking equal shares, need the padding.
    trims = self.pads and device.kind != 'tpu' and plan.count == 1
    self.batch_size = plan.replica_batch
    self.loop = InferenceLoop(
        self.infeed, self.outfeed, call_model_fn, device, mode,
        lambda spec: outfed_fn(spec, self.pads, plan.replica_batch, trims,
                               plan.count),
        reuse=reuse, replica_devices=plan.devices,
        trim_to=plan.replica_batch if trims else None)
    # Hardware feeds (TPU) have no close ops: an error closes the session.
    self.drain_ops, self.cancel_ops = device_feeds.end_ops(self.infeed, self.outfeed)


class InferenceRun(object):
  """One evaluate() or predict() call in a graph and session of its own:
  the graph is built, and the arguments checked, at once.

  Run `fetch` once per loop with `hooks` (runs.run_loops), with
  `session_creator`, `rendezvous`, `aborts` and `loop_options` (the run
  options of the loop's thread pool); `graph` must be the default
  graph while doing so. Subclasses give the mode, the batch size, what each
  step outfeeds (`outfed(spec)`), the reader of the outfeed, and hooks
  that go right after the feeding hook.
  """

  def __init__(self, estimator, input_fn, mode, batch_size, outfed, steps,
               hooks, checkpoint_path):
    if not callable(input_fn):
      raise TypeError('input_fn must be callable, got %r' % (input_fn,))
    signatures.check_input_fn(input_fn)
    user_hooks = check_hooks(hooks)
    checkpoint = checkpoint_to_read(estimator, checkpoint_path)
    self.checkpoint = checkpoint
    config = estimator.config
    self.graph = tf.Graph()
    with self.graph.as_default():
      device = devices.Device(config.device)
      loop_lib.create_global_step(self.graph)
      plan = estimator._replica_plan(
          batch_size, 'eval_batch_size' if mode == compat.ModeKeys.EVAL
          else 'predict_batch_size')
      call, = plan.input_calls()
      dataset = estimator._call_input_fn(
          input_fn, dict(estimator.params, batch_size=plan.input_batch), call)
      params = dict(estimator.params, batch_size=plan.replica_batch)
      pipeline = InferencePipeline(dataset, plan, device,
                                   model_caller(estimator, params), mode,
                                   outfed, config.feeding)
      self.rendezvous = ErrorRendezvous()
      reader = self._make_reader(pipeline.outfeed)
      spec = pipeline.loop.spec
      scaffold = estimator._scaffold(
          spec, [pipeline.infeed.initializer] + reader.init_ops)
      loop_state = loop_lib.LoopState()
      feeding = hooks_lib.InfeedOutfeedHook(
          loop_state, pipeline.infeed, reader, self.rendezvous,
          drain_ops=pipeline.drain_ops, cancel_ops=pipeline.cancel_ops,
          session_holders=[pipeline.infeed, pipeline.outfeed])
      device_system = hooks_lib.DeviceSystemHook(
          device, close_ops=pipeline.cancel_ops or (),
          session_config=config.session_config)
      spec_hooks = (spec.evaluation_hooks if mode == compat.ModeKeys.EVAL
                    else spec.prediction_hooks)
      # Order matters, as in training: the loop size first, so that every
      # later before_run sees it; at the end the feeding hook joins the
      # outfeed thread (every loop's values are in) before the hooks after
      # it read results; the device system hook comes last.
      self.hooks = [
          InferenceLoopHook(loop_state, config.iterations_per_loop,
                            pipeline.loop, steps),
          feeding,
      ] + self._after_feeding() + list(spec_hooks) + user_hooks + [
          device_system]
      self.aborts = [feeding.abort, device_system.close]
      self.fetch = pipeline.loop.stopped
      session_config, self.loop_options, feeding_options = (
          device_feeds.session_pools(config.session_config))
      pipeline.infeed.run_options = feeding_options
      pipeline.outfeed.run_options = feeding_options
      self.session_creator = session_creator(scaffold, checkpoint,
                                             session_config)

  def _make_reader(self, outfeed):
    """The outfeed controller's work: read_loop(session, count),
    flush(session) and init_ops."""
    raise NotImplementedError

  def _after_feeding(self):
    return []


class InferenceLoopHook(v1.train.SessionRunHook):
  """Sizes each loop as min(iterations_per_loop, steps left) and stops after
  the loop that reached `steps`, or that ran past the end of the input.

  The size goes to the loop as a feed, and to the feeding hook through the
  shared LoopState. `steps_done` counts the steps run, padding included.
  """

  def __init__(self, loop_state, iterations_per_loop, loop, steps=None):
    self._loop_state = loop_state
    self._iterations_per_loop = config_lib.check_positive_int(
        'iterations_per_loop', iterations_per_loop)
    self._steps = config_lib.check_positive_int('steps', steps,
                                                allow_none=True)
    self._loop = loop
    self.steps_done = 0
    self.input_ended = False

  def after_create_session(self, session, coord):
    self.steps_done = 0
    self.input_ended = False
    self._next_loop(coord)

  def before_run(self, run_context):
    return v1.train.SessionRunArgs(
        self._loop.stopped,
        feed_dict={self._loop.iterations: self._loop_state.iterations})

  def after_run(self, run_context, run_values):
    self.steps_done += self._loop_state.iterations
    if run_values.results:
      self.input_ended = True
      self._loop_state.iterations = 0
      run_context.request_stop()
    else:
      self._next_loop(run_context)

  def _next_loop(self, stopper):
    size = next_loop_size(self._iterations_per_loop, self._steps,
                          self.steps_done)
    self._loop_state.iterations = size
    if size == 0:
      stopper.request_stop()


def model_caller(estimator, params):
  """`call(features, labels, mode)`: the estimator's model_fn with `params`,
  as the loops call it."""
  def call(features, labels, mode):
    return estimator._call_model_fn(features, labels, mode, params)
  return call


def check_hooks(hooks):
  hooks = list(hooks or ())
  for hook in hooks:
    if not isinstance(hook, v1.train.SessionRunHook):
      raise TypeError('hooks must be SessionRunHook instances, got %r' %
                      (hook,))
  return hooks


def checkpoint_to_read(estimator, checkpoint_path):
  """The checkpoint to evaluate or predict with: `checkpoint_path`, else the
  latest in model_dir; None (initialised variables) when there is none."""
  if checkpoint_path is None:
    path = estimator.latest_checkpoint()
    if path is None:
      log.warning('No checkpoint in model_dir %s; running with freshly '
                  'initialised variables', estimator.model_dir)
    return path
  if not isinstance(checkpoint_path, (str, os.PathLike)):
    raise TypeError('checkpoint_path must be a path string or None, got %r' %
                    (checkpoint_path,))
  checkpoint_path = os.fspath(checkpoint_path)
  if tf.io.gfile.isdir(checkpoint_path):
    path = v1.train.latest_checkpoint(checkpoint_path)
    if path is None:
      raise ValueError('checkpoint_path %s is a directory without a '
                       'checkpoint' % checkpoint_path)
    return path
  if not is_checkpoint(checkpoint_path):
    raise ValueError('checkpoint_path %s is not a checkpoint (expected a '
                     'prefix such as model_dir/model.ckpt-100)' %
                     checkpoint_path)
  return checkpoint_path


def is_checkpoint(path):
  """Whether a checkpoint's files are at prefix `path`."""
  try:
    return (tf.io.gfile.exists(path + '.index') or
            (not tf.io.gfile.isdir(path) and tf.io.gfile.exists(path)))
  except tf.errors.NotFoundError:
    return False


def session_creator(scaffold, checkpoint, session_config):
  return v1.train.ChiefSessionCreator(
      scaffold=scaffold, checkpoint_filename_with_path=checkpoint,
      config=session_config)


def next_loop_size(iterations_per_loop, steps, steps_done):
  """min(iterations_per_loop, steps left); 0 when `steps` are done."""
  if steps is None:
    return iterations_per_loop
  return max(0, min(iterations_per_loop, steps - steps_done))
