"""The infeed of a cluster run: one input pipeline and one infeed queue per
worker, each on that worker's CPU, all driven from the chief's session.

Each worker's input_fn runs once, with `params['input_context']` (a
tf.distribute.InputContext) naming the worker's index and the number of
workers, so that it reads its own shard. Its batches stay on its worker:
the infeed thread's one session.run enqueues a loop's batches on every
worker at once, and each replica dequeues from its own worker's queue.
Because the chief's session holds every worker's iterator, its checkpoints
hold every worker's input position.
"""
import tensorflow as tf

from hookestimator import device_feeds
from hookestimator import replicas as replicas_lib


def input_context(worker, num_workers, num_replicas):
  """What input_fn learns of its place in the cluster: the worker's index
  among `num_workers` pipelines, `num_replicas` replicas in all."""
  return tf.distribute.InputContext(num_input_pipelines=num_workers,
                                    input_pipeline_id=worker,
                                    num_replicas_in_sync=num_replicas)


class WorkerInfeeds(object):
  """The workers' HostInfeeds as one infeed: the interface the feeding
  hook, the device loop and the checkpoint hook use (fed by the infeed
  thread, RunConfig's feeding='infeed_thread').

  Args:
    datasets: each worker's dataset, its elements [local_count, ...]
      stacks (replicas.Plan.replicate_input), built on its worker.
    devices: each worker's CPU.
    local_count: the replicas on each worker.
    save_device: the chief's CPU, where the checkpoint reads the input
      positions (workers write nothing).
  """

  feeds_from_thread = True
  # Checkpoint keys of the input positions: worker_0_..., worker_1_...
  part_label = 'worker'

  def __init__(self, datasets, devices, local_count, save_device):
    self.parts = []
    for dataset, device in zip(datasets, devices):
      with tf.device(device):
        self.parts.append(device_feeds.HostInfeed(dataset))
    self._devices = list(devices)
    self._local_count = local_count
    self.save_device = save_device
    with tf.device(save_device):
      self.enqueue_loop = tf.group(*[p.enqueue_loop for p in self.parts],
                                   name='worker_enqueue_loops')
      self.close_op = tf.group(*[p.close_op for p in self.parts],
                               name='worker_infeeds_close')
      self.initializer = tf.group(*[p.initializer for p in self.parts],
                                  name='worker_infeeds_init')
    self.input_ended = False
    self.run_options = None
    self._key = None
    self._callable = None

  def dequeue_replicas(self):
    """Every replica's (features, labels), worker by worker, each read on
    its own worker; for use inside the device loop."""
    per_replica = []
    for part, device in zip(self.parts, self._devices):
      with tf.device(device):
        per_replica.extend(replicas_lib.unstack(part.dequeue(),
                                                self._local_count))
    return per_replica

  def run_loop(self, session, count):
    """Enqueues `count` batches on every worker; False once an input ended
    (every queue is closed then, so the loop stops after what was fed)."""
    if self._key != session:
      self._callable = session.make_callable(
          self.enqueue_loop, [p.count for p in self.parts],
          accept_options=True)
      self._key = session
    try:
      self._callable(*([count] * len(self.parts)), options=self.run_options)
      return True
    except tf.errors.OutOfRangeError:
      self.input_ended = True
      session.run(self.close_op)
      return False

  def release_session(self):
    self._key = self._callable = None
