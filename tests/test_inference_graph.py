"""The host-side padding of evaluation and prediction input, and the EVAL and
PREDICT loops built for a TPU (graph only: running them needs a TPU)."""
import numpy as np
import pytest
import tensorflow as tf

from hookestimator import devices
from hookestimator import padding
from hookestimator import replicas
from hookestimator.evaluation import MetricsReader
from hookestimator.evaluation import _Outfed as EvalOutfed
from hookestimator.inference import InferencePipeline
from hookestimator.prediction import _Outfed as PredictOutfed
from tests import inference_models as models
from tests.test_tpu_graph import assert_one_tpu_program_between_hardware_feeds

v1 = tf.compat.v1


def _take(dataset, count):
  next_element = v1.data.make_one_shot_iterator(dataset).get_next()
  with v1.Session() as session:
    return [session.run(next_element) for _ in range(count)]


def test_short_batches_are_padded_and_the_end_repeats():
  names = np.array([b'a', b'b', b'c', b'd', b'e'])
  values = np.arange(10, dtype=np.float32).reshape(5, 2)
  with tf.Graph().as_default():
    dataset = tf.data.Dataset.from_tensor_slices(
        ({'name': names, 'value': values}, tf.range(5))).batch(3)
    assert padding.check_input(dataset, 3)  # Short batches: padded.
    padded, has_labels = padding.pad_dataset(dataset, 3, pads=True)
    assert has_labels
    shapes = v1.data.get_output_shapes(padded)
    assert shapes[0][0]['value'].as_list() == [3, 2]
    batches = _take(padded, 4)
  (features, labels), state = batches[1]
  assert list(state) == [padding.REAL, padding.REAL, padding.PADDING]
  assert list(features['name']) == [b'd', b'e', b'']
  np.testing.assert_array_equal(features['value'], [[6, 7], [8, 9], [0, 0]])
  assert list(labels) == [3, 4, 0]
  for (features, labels), state in batches[2:]:
    assert list(state) == [padding.PAST_END] * 3
    assert list(labels) == [0, 0, 0]


def test_features_only_input():
  with tf.Graph().as_default():
    dataset = models.dataset(5, 4, labels=False)
    padded, has_labels = padding.pad_dataset(
        dataset, 4, padding.check_input(dataset, 4))
    assert not has_labels
    (inputs, state), = _take(padded, 1)
  assert len(inputs) == 1 and inputs[0].shape == (4, 4)
  assert list(state) == [padding.REAL] * 4


def test_whole_batches_of_any_layout_are_not_padded():
  # A TPU program's input: each batch of 2 [3, 2] images transposed to
  # HWCN and flattened; only the labels keep a batch axis.
  images = np.arange(24, dtype=np.float32).reshape(4, 3, 2)
  with tf.Graph().as_default():
    dataset = tf.data.Dataset.from_tensor_slices(
        (images, np.arange(4))).batch(2, drop_remainder=True).map(
            lambda x, y: (tf.reshape(tf.transpose(x, [1, 2, 0]), [-1]), y))
    assert not padding.check_input(dataset, 2)
    padded, has_labels = padding.pad_dataset(dataset, 2, pads=False)
    assert has_labels
    batches = _take(padded, 3)
  (features, labels), state = batches[0]
  np.testing.assert_array_equal(
      features, images[:2].transpose([1, 2, 0]).reshape(-1))
  assert list(labels) == [0, 1] and list(state) == [padding.REAL] * 2
  (features, labels), state = batches[2]
  assert list(state) == [padding.PAST_END] * 2 and features.shape == (12,)


def test_padding_a_component_without_a_batch_axis_is_refused():
  # The labels' batches can be short, so they are padded; the flattened
  # features have no batch axis to pad.
  with tf.Graph().as_default():
    dataset = tf.data.Dataset.zip((
        tf.data.Dataset.from_tensors(np.zeros([12], np.float32)).repeat(),
        tf.data.Dataset.range(5).batch(2)))
    with pytest.raises(ValueError, match=(
        r'component features has shape \(12,\) and cannot be padded: its '
        r'batches can be short \(labels has shape \((\?|None),\)\)')):
      padding.check_input(dataset, 2)


@pytest.mark.parametrize('mode,outfed', [
    ('eval', EvalOutfed),
    ('infer', lambda: PredictOutfed(None)),
])
def test_tpu_inference_loop_is_one_program_between_hardware_feeds(mode,
                                                                   outfed):
  with tf.Graph().as_default() as graph:
    device = devices.Device('tpu', list_devices=lambda kind: [])
    v1.train.create_global_step()
    outfed = outfed()
    pipeline = InferencePipeline(
        models.dataset(20, 8), replicas.Plan('tpu', 1, 8, 'batch_size'),
        device, lambda f, l, m: models.model_fn(f, l, m, {}), mode, outfed,
        'infeed_thread')
    if mode == 'eval':
      MetricsReader(pipeline.outfeed, outfed)
  assert_one_tpu_program_between_hardware_feeds(graph)
  assert pipeline.cancel_ops is None and pipeline.drain_ops == ()
  # Row states first, then [loss, labels, logits] or the predictions.
  dtypes = [t.dtype for t in pipeline.outfeed.dequeue_op]
  assert dtypes[0] == tf.int32
  assert len(dtypes) == 4  # eval: + loss, labels, logits; infer: 3 keys
