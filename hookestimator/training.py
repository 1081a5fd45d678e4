"""Training: one train() call as a run object, as evaluation.py and
prediction.py have theirs. Building it builds the graph in a graph of its
own (the device loop over the replicas, the feeds, the outfeed reader) and
the hook list in its fixed order, checking everything that can be checked
before anything is written to model_dir; `run()` runs the loops."""
import contextlib
import logging

import tensorflow as tf

from hookestimator import devices
from hookestimator import event_writer
from hookestimator import device_feeds
from hookestimator import feeder_tasks
from hookestimator import hooks as hooks_lib
from hookestimator import loop as loop_lib
from hookestimator import model_dir as model_dir_lib
from hookestimator import task_server
from hookestimator import runs
from hookestimator import signals
from hookestimator import tensor_input
from hookestimator import cluster as cluster_lib
from hookestimator import worker_sync
from hookestimator.checkpoint import CheckpointHook
from hookestimator.compat import v1
from hookestimator.controller import ErrorRendezvous
from hookestimator.host_call import OutfeedReader

log = logging.getLogger(__name__)


class Training(object):
  """Trains `estimator` on input_fn's data for `steps` more steps or up to
  `max_steps` (or until the input ends).

  `add_on(device, loop_state, rendezvous, device_loop, infeed)`, when
  given, builds more of the graph after the training loop and returns a
  hook that runs with the training hooks (after the checkpoint hook), with
  `init_ops` and an `abort()` (train_and_evaluate's evaluation rounds).
  """

  def __init__(self, estimator, input_fn, steps, max_steps, user_hooks,
               signal_stop, add_on=None):
    self._estimator = estimator
    self._signal_stop = signal_stop
    self.graph = tf.Graph()
    cluster = estimator.config.cluster
    # In a cluster each worker (the chief too) builds and runs its own
    # replicas on its own devices.
    with self.graph.as_default(), (
        tf.device(cluster_lib.task_name(cluster.task)) if cluster is not None
        else contextlib.nullcontext()):
      self._build(estimator, input_fn, steps, max_steps, user_hooks, add_on)

  def _build(self, estimator, input_fn, steps, max_steps, user_hooks,
             add_on):
    config = estimator.config
    model_dir = estimator.model_dir
    model_dir_lib.check_writable(model_dir)
    cluster = config.cluster
    plan = estimator._replica_plan(estimator.train_batch_size,
                                   'train_batch_size', cluster=cluster)
    params = dict(estimator.params, batch_size=plan.replica_batch)
    device = devices.Device(config.device)
    found = device.check()  # Before anything is written to model_dir.
    if device.kind == 'gpu':
      plan.check_devices(found)
    global_step = loop_lib.create_global_step(self.graph)
    if cluster is None:
      infeed, outfeed = _feeds(estimator, input_fn, plan, device)
    elif cluster.feeders:
      hosts = [cluster.feeder_device(i) for i in range(len(cluster.feeders))]
      infeed = feeder_tasks.FeederInfeeds(
          _pipelines(estimator, input_fn, plan, hosts), hosts,
          cluster.host_device(0))
      outfeed = device_feeds.HostOutfeed()
    else:  # This worker's own input, as in one process.
      infeed, outfeed = _feeds(estimator, input_fn, plan, device,
                               cluster=cluster)
    # Across workers the sums are collective all-reduces.
    joined = cluster is not None and cluster.num_workers > 1
    writes = cluster is None or cluster.is_chief
    device_loop = loop_lib.DeviceLoop(
        global_step, infeed, outfeed,
        lambda features, labels, mode: estimator._call_model_fn(
            features, labels, mode, params),
        device, check_nan_loss=config.check_nan_loss,
        replica_devices=plan.devices,
        group_size=plan.count if joined else None)
    group = None
    if joined:
      group = worker_sync.WorkerGroup(
          cluster, v1.global_variables(),
          v1.variables_initializer(device_loop.mirrored.copies), infeed,
          model_dir, keep=config.keep_checkpoint_max)
    # Before anything is written to model_dir.
    model_dir_lib.check_checkpoint_matches(estimator.latest_checkpoint(),
                                           v1.global_variables())
    # Opens its event file at the first summary: nothing is written to
    # model_dir before the first step, and closing it ends its thread.
    self._writer = event_writer.EventWriter(model_dir if writes else None,
                                            self.graph)
    # The run's one event file: hooks with something of their own to show
    # in TensorBoard write it through the run's writer.
    for hook in user_hooks:
      if isinstance(hook, event_writer.TextSummaryHook):
        hook.use_writer(self._writer)
    reader = OutfeedReader(outfeed, device_loop.host_call, self._writer)
    self._rendezvous = ErrorRendezvous()
    loop_state = loop_lib.LoopState()
    extra = (add_on(device, loop_state, self._rendezvous, device_loop,
                    infeed) if add_on is not None else None)
    # The replicas' copies of the variables are local variables whose
    # initialisers read the real ones: the local init op sets them once
    # those are restored or initialised.
    scaffold = estimator._scaffold(
        device_loop.spec, [infeed.initializer] + reader.init_ops +
        (extra.init_ops if extra else []))
    # Hardware feeds (TPU) have no close ops: an error closes the session.
    drain_ops, cancel_ops = device_feeds.end_ops(infeed, outfeed)
    # Host queues are read in batches of steps; a hardware outfeed is read
    # loop by loop, as the TPU program fills it.
    feeding = hooks_lib.InfeedOutfeedHook(
        loop_state, infeed, reader, self._rendezvous,
        drain_ops=drain_ops, cancel_ops=cancel_ops,
        outfeed_batch_steps=(device_feeds.OUTFEED_BATCH_STEPS if cancel_ops is not None
                             else 1),
        session_holders=[infeed, outfeed])
    device_system = hooks_lib.DeviceSystemHook(
        device, close_ops=cancel_ops or (),
        session_config=config.session_config)
    # A cluster's chief alone writes checkpoints.
    checkpoints = CheckpointHook(
        model_dir, scaffold, device_loop.global_step_after,
        save_steps=config.save_checkpoints_steps,
        save_secs=config.save_checkpoints_secs,
        infeed=infeed) if writes else None
    # Order matters. On a cluster the start hook comes first, so that every
    # worker holds the chief's variables (its global step too) before any
    # hook reads them. The loop-size hook comes next, so that every later
    # before_run sees this loop's size; on a cluster the agreement follows
    # it, settling the size, a save and a stop for every task alike (in
    # place of the signal hook), and at the end has the workers' input
    # positions written before the chief's final checkpoint. The feeding
    # hook drains and joins its threads, and raises any error they hit,
    # before the checkpoint hook writes the final checkpoint (a failed run
    # saves nothing more); the device system hook comes last, closing the
    # queues for good and shutting the system down once nothing uses them.
    self._hooks = [h for h in [
        group and worker_sync.StartHook(group, self._signal_stop),
        hooks_lib.LoopSizeHook(loop_state, config.iterations_per_loop,
                               device_loop.iterations,
                               device_loop.global_step_after,
                               num_steps=steps, last_step=max_steps,
                               sizer=_step_time_sizer(config)),
        group and worker_sync.AgreementHook(
            group, loop_state, device_loop.global_step_after,
            self._signal_stop, checkpoints),
        feeding,
        hooks_lib.ThroughputHook(estimator.train_batch_size,
                                 config.log_step_count_steps,
                                 device_loop.global_step_after,
                                 device_loop.last_loss, self._writer,
                                 tags=reader.tags),
        checkpoints,
        None if group else signals.SignalStopHook(self._signal_stop),
        extra,
    ] if h] + list(device_loop.spec.training_hooks) + (
        list(user_hooks) + [device_system])
    self._aborts = [h.abort for h in (feeding, extra, checkpoints) if h] + [
        device_system.close]
    if cluster is None:
      session_config, self._loop_options, feeding_options = (
          device_feeds.session_pools(config.session_config))
      infeed.run_options = outfeed.run_options = feeding_options
    else:
      # A distributed session has no thread pool options. A worker's
      # places ops on its own task alone (collective ops reach the other
      # workers themselves); the chief's session of a cluster with feeders
      # runs their pipelines too.
      session_config = task_server.server_config(config.session_config)
      if joined:
        session_config.device_filters.append(
            cluster_lib.task_name(cluster.task))
      self._loop_options = None
    self._fetch = device_loop.train_op
    master = ''
    if cluster is not None:
      master = task_server.server(cluster, config.session_config).target
    # A worker restores nothing: the chief's values reach it by broadcast.
    self._creator = v1.train.ChiefSessionCreator(
        scaffold=scaffold, checkpoint_dir=model_dir if writes else None,
        config=session_config, master=master)

  def run(self):
    """Runs the loops; raises TrainingInterrupted after a signal stopped
    them (with the final checkpoint written)."""
    estimator = self._estimator
    tf.io.gfile.makedirs(estimator.model_dir)
    try:
      with self.graph.as_default():
        runs.run_loops(self._creator, self._hooks, self._fetch,
                       self._rendezvous, aborts=self._aborts,
                       options=self._loop_options)
    except tf.errors.OpError as error:
      explained = worker_sync.explained(error)
      if explained is error:
        raise
      raise explained from error
    finally:
      self._writer.close()  # Every event written, whatever ended the run.
    self._signal_stop.raise_if_stopped(estimator.checkpoint_step(),
                                       estimator.latest_checkpoint())


def train(estimator, input_fn, steps, max_steps, user_hooks, add_on=None):
  """Builds and runs a Training, SIGTERM and SIGINT recorded from the
  start of the build: one that lands while the graph is built (where
  TensorFlow, tracing a dataset function, may turn a KeyboardInterrupt
  into another error) stops the run before its first loop, as one during
  the loops stops it at the next boundary."""
  signal_stop = signals.SignalStop()
  with signal_stop:
    Training(estimator, input_fn, steps, max_steps, user_hooks, signal_stop,
             add_on=add_on).run()


def _step_time_sizer(config):
  """A sizer of loops lasting config.loop_seconds, starting with
  iterations_per_loop steps; None for loops of iterations_per_loop."""
  if config.loop_seconds is None:
    return None
  return hooks_lib.StepTimeSizer(config.loop_seconds,
                                 first_size=config.iterations_per_loop)


def _feeds(estimator, input_fn, plan, device, cluster=None):
  """The (infeed, outfeed) of input_fn's input in this process; on a
  cluster, this worker's, with params['input_context'] naming its shard."""
  config = estimator.config
  params = dict(estimator.params, batch_size=plan.input_batch)
  calls = plan.input_calls()
  if cluster is not None:
    params['input_context'] = cluster_lib.input_context(
        cluster.worker_index, cluster.num_workers, plan.count)
    calls = plan.input_calls(cluster.worker_index,
                             device=cluster.task_cpu)
  results = [estimator._call_input_fn(input_fn, dict(params), call)
             for call in calls]
  if tensor_input.is_tensor_input(results[0]):
    element = tensor_input.element(results)
    device_feeds.check_static_shapes(
        tf.nest.map_structure(lambda t: t.shape, element),
        tensor_input.static_shapes_why(device.kind, plan.count))
    log.warning(tensor_input.NO_POSITION_WARNING)
    return (tensor_input.make_infeed(device.kind, element, plan),
            device_feeds.make_outfeed(device.kind))
  for result in results:
    device_feeds.check_static_shapes(
        device_feeds.dataset_structure(result)[1],
        device_feeds.static_shapes_why(device.kind, config.feeding,
                                       plan.count))
  with tf.device(device_feeds.HOST_DEVICE):
    dataset = plan.replicate_input(results)
  return device_feeds.make_feeds(device.kind, dataset, config.feeding)


def _pipelines(estimator, input_fn, plan, hosts):
  """input_fn's datasets, one per host (a worker's or feeder's CPU), each
  called (once, or once per replica with PER_REPLICA) and placed on its
  host with params['input_context'] naming its shard."""
  datasets = []
  for index, host in enumerate(hosts):
    params = dict(estimator.params, batch_size=plan.input_batch,
                  input_context=cluster_lib.input_context(
                      index, len(hosts), plan.count))
    with tf.device(host):
      results = [estimator._call_input_fn(input_fn, dict(params), call)
                 for call in plan.input_calls(index, len(hosts), host)]
      for dataset in results:
        if tensor_input.is_tensor_input(dataset):
          raise TypeError(
              'input_fn returned %r; on a cluster it must return a '
              "tf.data.Dataset, each worker's or feeder's pipeline running "
              'on its own host' % (dataset,))
        device_feeds.check_static_shapes(
            device_feeds.dataset_structure(dataset)[1],
            device_feeds.QUEUE_NEEDS_STATIC)
      with tf.device(device_feeds.HOST_DEVICE):
        datasets.append(plan.replicate_input(results))
  return datasets
