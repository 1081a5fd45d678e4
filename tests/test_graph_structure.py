"""graph_structure: a graph's definition with large constants' values left
out, their dtype and shape kept, the live graph untouched."""
import numpy as np
import pytest
import tensorflow as tf

from hookestimator import graph_structure

v1 = tf.compat.v1


def _const(graph_def, name):
  return next(n for n in graph_def.node if n.name == name)


def _big_and_small_graph():
  graph = tf.Graph()
  with graph.as_default():
    big = tf.constant(np.arange(4096, dtype=np.float32).reshape(64, 64),
                      name='big')
    small = tf.constant([1., 2., 3.], name='small')
    tf.reduce_sum(big) + tf.reduce_sum(small)
  return graph


def test_large_constants_keep_dtype_and_shape_not_values():
  graph = _big_and_small_graph()
  structure = graph_structure.graph_def(graph)
  big = _const(structure, 'big').attr['value'].tensor
  assert tf.dtypes.as_dtype(big.dtype) == tf.float32
  assert [d.size for d in big.tensor_shape.dim] == [64, 64]
  assert not big.tensor_content and not big.float_val
  assert big.ByteSize() < 100
  assert _const(structure, 'big').attr['dtype'].type == big.dtype
  # Small constants keep their values.
  small = tf.make_ndarray(_const(structure, 'small').attr['value'].tensor)
  np.testing.assert_array_equal(small, [1., 2., 3.])
  # The same nodes, the same edges.
  full = graph.as_graph_def()
  assert [(n.name, n.op, list(n.input)) for n in structure.node] == [
      (n.name, n.op, list(n.input)) for n in full.node]
  assert structure.ByteSize() < full.ByteSize() - 16000


def test_the_live_graph_keeps_its_values():
  graph = _big_and_small_graph()
  graph_structure.graph_def(graph)
  value = graph.get_operation_by_name('big').get_attr('value')
  assert len(value.tensor_content) == 4096 * 4
  with v1.Session(graph=graph) as session:
    assert session.run('big:0')[63, 63] == 4095


@pytest.mark.parametrize('size, stripped', [(256, 0), (257, 1)])
def test_the_threshold_is_one_kibibyte_of_values(size, stripped):
  with tf.Graph().as_default() as graph:
    tf.constant(np.arange(size, dtype=np.float32))
  definition = graph.as_graph_def()
  assert graph_structure.strip_large_constants(definition) == stripped


def test_constants_inside_functions_are_stripped_too():
  with tf.Graph().as_default() as graph:
    table = np.arange(1000, dtype=np.float32)
    dataset = tf.data.Dataset.range(4).map(
        lambda i: tf.gather(tf.constant(table), i))
    v1.data.make_one_shot_iterator(dataset).get_next()
  full = graph.as_graph_def()
  structure = graph_structure.graph_def(graph)
  inner = [n for f in structure.library.function for n in f.node_def
           if n.op == 'Const' and
           len(n.attr['value'].tensor.tensor_shape.dim) == 1 and
           n.attr['value'].tensor.tensor_shape.dim[0].size == 1000]
  assert inner and not inner[0].attr['value'].tensor.tensor_content
  assert structure.ByteSize() < full.ByteSize() - 3000


def test_large_string_constants_are_stripped_too():
  with tf.Graph().as_default() as graph:
    tf.constant(['x' * 600, 'y' * 600], name='strings')
    tf.constant(['x' * 10, 'y' * 10], name='short')
  structure = graph_structure.graph_def(graph)
  assert not _const(structure, 'strings').attr['value'].tensor.string_val
  assert len(_const(structure, 'short').attr['value'].tensor.string_val) == 2


def test_sub_graph_def_keeps_only_what_computes_the_outputs():
  graph = _big_and_small_graph()
  sub = graph_structure.sub_graph_def(graph, ['small'])
  assert [n.name for n in sub.node] == ['small']
  sub = graph_structure.sub_graph_def(graph, ['big'])
  assert not _const(sub, 'big').attr['value'].tensor.tensor_content
