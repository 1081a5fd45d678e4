"""A run's event file: one per training run in model_dir, the graph's
structure in it once (large constants without their values, no meta
graph), and the run's text summaries through the same writer."""
import glob
import os

import numpy as np
import pytest
import tensorflow as tf

from hookestimator import event_writer
from tests.conftest import linear_model_fn

v1 = tf.compat.v1

BIG_ROWS = 1 << 18  # x: 2**18 rows of 4 float32, 4 MiB
BIG_BYTES = BIG_ROWS * 4 * 4


def _big_input_fn(params):
  x = np.random.RandomState(0).randn(BIG_ROWS, 4).astype(np.float32)
  y = (x[:, 0] > 0).astype(np.int64)
  return tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(
      params['batch_size'], drop_remainder=True)


def _event_files(directory):
  return sorted(glob.glob(os.path.join(str(directory),
                                       'events.out.tfevents*')))


def _events(path):
  return list(v1.train.summary_iterator(path))


def _graph_def(events):
  graph_defs = [e.graph_def for e in events if e.graph_def]
  assert len(graph_defs) == 1
  graph_def = tf.compat.v1.GraphDef()
  graph_def.ParseFromString(graph_defs[0])
  return graph_def


def _texts(events):
  return {(v.tag, e.step): tf.make_ndarray(v.tensor).item().decode()
          for e in events for v in e.summary.value
          if v.metadata.plugin_data.plugin_name == 'text'}


@pytest.fixture
def trained(make_estimator, tmp_path):
  est = make_estimator(iterations_per_loop=5, save_checkpoints_steps=10)
  hook = event_writer.TextSummaryHook('gin/operative_config',
                                      'a = 1\nb = 2', step=0)
  est.train(_big_input_fn, steps=10, hooks=[hook])
  return tmp_path / 'model'


def test_a_training_run_writes_one_event_file(trained):
  assert len(_event_files(trained)) == 1


def test_the_graph_keeps_the_constants_shape_and_dtype_not_its_values(
    trained):
  events = _events(_event_files(trained)[0])
  graph_def = _graph_def(events)
  shapes = {(tuple(d.size for d in n.attr['value'].tensor.tensor_shape.dim),
             n.attr['value'].tensor.dtype): n.attr['value'].tensor
            for n in graph_def.node if n.op == 'Const'}
  big = shapes[((BIG_ROWS, 4), tf.float32.as_datatype_enum)]
  assert not big.tensor_content and not big.float_val
  assert ((BIG_ROWS,), tf.int64.as_datatype_enum) in shapes
  # The meta graph, which would carry the constants again, is left out.
  assert not [e for e in events if e.meta_graph_def]


def test_the_event_file_is_under_5_percent_of_the_constant(trained):
  size = os.path.getsize(_event_files(trained)[0])
  assert size < 0.05 * BIG_BYTES, size


def test_text_summaries_go_through_the_runs_own_writer(trained):
  events = _events(_event_files(trained)[0])
  assert _texts(events)[('gin/operative_config', 0)] == (
      '    a = 1\n    b = 2')
  assert any(v.tag == 'loss' for e in events for v in e.summary.value)


def test_writer_without_a_graph_writes_no_graph(tmp_path):
  writer = event_writer.EventWriter(str(tmp_path))
  writer.add_summary(event_writer.text_summary('t', 'x'), 3)
  writer.close()
  (path,) = _event_files(tmp_path)
  events = _events(path)
  assert not [e for e in events if e.graph_def or e.meta_graph_def]
  assert _texts(events) == {('t', 3): '    x'}


def test_no_file_before_the_first_summary(tmp_path):
  with tf.Graph().as_default() as graph:
    tf.constant(np.zeros(1000, np.float32))
  writer = event_writer.EventWriter(str(tmp_path), graph)
  writer.close()
  assert _event_files(tmp_path) == []


def test_text_summary_hook_checks_its_arguments_and_its_writer():
  with pytest.raises(ValueError, match="''"):
    event_writer.TextSummaryHook('', 'x', 0)
  hook = event_writer.TextSummaryHook('tag', 'x', 0)
  with pytest.raises(RuntimeError, match='no event writer'):
    hook.after_create_session(None, None)
