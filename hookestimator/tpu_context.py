"""params['context'] of a TPU program: what input_fn and model_fn learn of
the replicas they run on, with the fields of TPUEstimator's TPUContext.

TPUEstimator gives it to both functions while the program runs as a TPU
program (use_tpu=True), and not on the CPU path (use_tpu=False). Here the
program runs as a TPU program on a TPU, or as several replicas off one
(`params['use_tpu']` is then True as well): the context describes those
replicas. The hosts are the cluster's workers (one without a cluster),
each feeding the replicas on its own devices.
"""
import collections

from hookestimator import device_feeds

# One input_fn call: the host it runs on (its CPU device and index), its
# index among all the calls and their count, and how many replicas its
# batches feed.
InputCall = collections.namedtuple(
    'InputCall', 'device host index count consumed')


def one_call(hosts, replicas_per_host, host=0,
             device=device_feeds.HOST_DEVICE):
  """The InputCall of one input_fn call per host, feeding its replicas."""
  return InputCall(device, host, host, hosts, replicas_per_host)


def per_replica_calls(hosts, replicas_per_host, host=0,
                      device=device_feeds.HOST_DEVICE):
  """The InputCalls of one input_fn call per replica of host `host`
  (TPUEstimator's per-core input, PER_SHARD_V1, in training)."""
  first = host * replicas_per_host
  return [InputCall(device, host, first + replica,
                    hosts * replicas_per_host, 1)
          for replica in range(replicas_per_host)]


class TPUContext(object):
  """The replicas a TPU program runs on, as TPUEstimator's TPUContext
  reports them.

  Args:
    num_replicas: the replicas of the whole run.
    num_hosts: the hosts feeding them, each the same number.
    host_device: each host's CPU device, a function of its index.
    call: the InputCall of the input_fn given this context; None for
      model_fn's.
  """

  def __init__(self, num_replicas, num_hosts, host_device, call=None):
    self._num_replicas = num_replicas
    self._num_hosts = num_hosts
    self._host_device = host_device
    self._call = call

  def _from_input_fn(self, what):
    if self._call is None:
      raise RuntimeError('This TPUContext instance must not be called from '
                         'model_fn: %s is known to input_fn only' % what)
    return self._call

  def current_input_fn_deployment(self):
    """(host device, this call's index, the number of calls, the replicas
    this call's batches feed). input_fn only."""
    call = self._from_input_fn('current_input_fn_deployment()')
    return (call.device, call.index, call.count, call.consumed)

  @property
  def current_host(self):
    """The index of the host running this input_fn call. input_fn only."""
    return self._from_input_fn('current_host').host

  @property
  def num_replicas(self):
    return self._num_replicas

  @property
  def num_hosts(self):
    return self._num_hosts

  @property
  def num_of_replicas_per_host(self):
    return self._num_replicas // self._num_hosts

  @property
  def device_assignment(self):
    """None: the replicas are not placed by a TPU device assignment (as
    TPUEstimator without model parallelism). model_fn only."""
    if self._call is not None:
      raise RuntimeError('This TPUContext instance must not be called from '
                         'input_fn: device_assignment is known to model_fn '
                         'only')
    return None

  def device_for_replica(self, replica_id):
    """(the host CPU feeding replica `replica_id`, its ordinal on that
    host)."""
    if not 0 <= replica_id < self._num_replicas:
      raise ValueError('replica_id %r is out of range: expected 0 to %d' %
                       (replica_id, self._num_replicas - 1))
    per_host = self.num_of_replicas_per_host
    return (self._host_device(replica_id // per_host),
            replica_id % per_host)

  @property
  def tpu_host_placement_function(self):
    """A function of `host_id` giving that host's CPU device."""
    def placement(host_id=None, replica_id=None):
      if host_id is None:
        host_id = (replica_id or 0) // self.num_of_replicas_per_host
      return self._host_device(host_id)
    return placement
