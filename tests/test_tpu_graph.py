"""The TPU path builds its graph without a TPU: system init/shutdown in a
graph of their own, the loop as one TPU program fed by the hardware infeed
and drained from the hardware outfeed. Running it needs a TPU."""
import pytest
import tensorflow as tf

from hookestimator import devices
from hookestimator import device_feeds
from hookestimator import loop as loop_lib
from hookestimator.host_call import OutfeedReader
from tests.conftest import dataset_of, linear_model_fn

v1 = tf.compat.v1


def assert_one_tpu_program_between_hardware_feeds(graph):
  """The graph runs a TPU program fed by the hardware infeed and outfeed,
  with no host queues."""
  types = _op_types(graph)
  for op_type in ('TPUReplicateMetadata', 'InfeedEnqueueTuple',
                  'InfeedDequeueTuple', 'OutfeedEnqueueTuple',
                  'OutfeedDequeueTuple'):
    assert op_type in types
  assert not types & {'FIFOQueueV2', 'QueueCloseV2'}


def _op_types(graph):
  """Op types in the graph and in every function it holds (loop bodies)."""
  graph_def = graph.as_graph_def()
  types = {node.op for node in graph_def.node}
  for function in graph_def.library.function:
    types.update(node.op for node in function.node_def)
  return types


class _FakeWriter(object):

  def add_summary(self, *args):
    pass

  def flush(self):
    pass


@pytest.fixture
def tpu_graph():
  def host_call(loss, global_step):
    return (lambda loss: {'loss_copy': loss[0]}), [tf.reshape(loss, [1])]

  with tf.Graph().as_default() as graph:
    device = devices.Device('tpu', list_devices=lambda kind: [])
    global_step = loop_lib.create_global_step(graph)
    infeed, outfeed = device_feeds.make_feeds('tpu', dataset_of(64, 8))
    loop = loop_lib.DeviceLoop(
        global_step, infeed, outfeed,
        lambda f, l, mode: linear_model_fn(f, l, mode,
                                           {'host_call': host_call}),
        device)
    reader = OutfeedReader(outfeed, loop.host_call, _FakeWriter())
  return graph, device, infeed, outfeed, loop, reader


def test_tpu_loop_is_one_tpu_program_between_hardware_feeds(tpu_graph):
  graph, _, infeed, outfeed, loop, reader = tpu_graph
  assert_one_tpu_program_between_hardware_feeds(graph)
  # Nothing to close.
  assert infeed.close_op is None and outfeed.close_op is None
  # The enqueue loop feeds `count` batches in one run; the outfeed brings
  # back (global step, loss, host_call tensor) stacked over the loop.
  assert [t.dtype for t in outfeed.dequeue_op] == [tf.int64, tf.float32,
                                                   tf.float32]
  assert outfeed.dequeue_op[2].shape.as_list() == [None, 1]
  assert loop.host_call is not None


def test_tpu_system_init_and_shutdown_live_in_their_own_graph(tpu_graph):
  graph, device, _, _, _, _ = tpu_graph
  assert device.init_graph is not graph
  init_types = {op.type for op in device.init_graph.get_operations()}
  assert {'ConfigureDistributedTPU', 'ShutdownDistributedTPU'} <= init_types
  assert 'ConfigureDistributedTPU' not in _op_types(graph)


def test_tpu_without_a_tpu_fails_plainly(tpu_graph):
  _, device, _, _, _, _ = tpu_graph
  with pytest.raises(devices.DeviceNotFoundError, match='no TPU device'):
    device.check()


def test_tensor_input_feeds_the_hardware_infeed(tmp_path):
  """input_fn returning tensors (tensor_input.py): on a TPU the infeed
  thread runs them into the hardware infeed, one batch a run."""
  from hookestimator import replicas
  from hookestimator import tensor_input
  with tf.Graph().as_default() as graph:
    device = devices.Device('tpu', list_devices=lambda kind: [])
    global_step = loop_lib.create_global_step(graph)
    features, labels = v1.data.make_one_shot_iterator(
        dataset_of(64, 8)).get_next()
    plan = replicas.Plan('tpu', 1, 8, 'train_batch_size')
    infeed = tensor_input.make_infeed('tpu', (features, labels), plan)
    outfeed = device_feeds.make_outfeed('tpu')
    loop_lib.DeviceLoop(global_step, infeed, outfeed,
                        lambda f, l, mode: linear_model_fn(f, l, mode, {}),
                        device)
  assert isinstance(infeed, tensor_input.TpuTensorInfeed)
  assert_one_tpu_program_between_hardware_feeds(graph)
  assert infeed.close_op is None
  assert tensor_input.static_shapes_why('tpu', 1) == device_feeds.TPU_NEEDS_STATIC
