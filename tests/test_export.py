"""export_saved_model(): a standard SavedModel that TensorFlow's own loaders
read and that gives predict's outputs."""
import os

import numpy as np
import pytest
import tensorflow as tf

import hookestimator as he
from hookestimator import compat
from tests import inference_models as models

v1 = tf.compat.v1


@pytest.fixture(scope='module')
def est(tmp_path_factory):
  return models.trained(tmp_path_factory.mktemp('export'))


def serving_input_fn():
  x = v1.placeholder(tf.float32, [None, models.NUM_FEATURES], name='x')
  return he.export.TensorServingInputReceiver(x, {'x': x})


def _predict(est, x):
  return list(est.predict(lambda params: tf.data.Dataset.from_tensor_slices(
      x).batch(params['batch_size']), yield_single_examples=False))


def test_reloads_with_the_v1_loader_and_matches_predict(est, tmp_path):
  export_dir = est.export_saved_model(str(tmp_path / 'exports'),
                                      serving_input_fn)
  assert os.path.dirname(export_dir) == str(tmp_path / 'exports')
  assert os.listdir(str(tmp_path / 'exports')) == [os.path.basename(
      export_dir)]
  x, _ = models.data(11, seed=5)
  with tf.Graph().as_default(), v1.Session() as session:
    meta_graph = v1.saved_model.loader.load(session, ['serve'], export_dir)
    signature = meta_graph.signature_def['serving_default']
    assert sorted(signature.outputs) == ['classes', 'logits', 'probabilities']
    served = session.run(
        {k: v.name for k, v in signature.outputs.items()},
        {signature.inputs['x'].name: x})
  predicted = _predict(est, x)
  for key in served:
    np.testing.assert_allclose(
        served[key], np.concatenate([b[key] for b in predicted]), rtol=1e-6)


@pytest.mark.skipif(not compat.IS_TF2, reason='tf.saved_model.load is TF2')
def test_reloads_with_the_tf2_loader(est, tmp_path):
  export_dir = est.export_saved_model(str(tmp_path), serving_input_fn)
  x, _ = models.data(5, seed=6)
  loaded = tf.saved_model.load(export_dir)
  served = loaded.signatures['serving_default'](x=tf.constant(x))
  np.testing.assert_allclose(served['logits'].numpy(),
                             models.numpy_logits(est, x), rtol=1e-5)


def test_export_outputs_name_the_signatures(est, tmp_path):
  def model_fn(features, labels, mode, params):
    spec = models.model_fn(features, labels, mode, params)
    scores = spec.predictions['probabilities']
    return spec._replace(export_outputs={
        'classify': he.export.PredictOutput(
            {'classes': spec.predictions['classes']}),
        'serving_default': he.export.PredictOutput(
            {'scores': scores}),
    })
  other = he.HookEstimator(model_fn, est.config, train_batch_size=8)
  export_dir = other.export_saved_model(str(tmp_path), serving_input_fn,
                                        assets_extra={'notes/a.txt': __file__},
                                        as_text=True)
  with tf.Graph().as_default(), v1.Session() as session:
    meta_graph = v1.saved_model.loader.load(session, ['serve'], export_dir)
    assert sorted(meta_graph.signature_def) == ['classify', 'serving_default']
    assert list(meta_graph.signature_def['serving_default'].outputs) == [
        'scores']
  assert os.path.exists(os.path.join(export_dir, 'saved_model.pbtxt'))
  assert os.path.exists(os.path.join(export_dir, 'assets.extra', 'notes',
                                     'a.txt'))


def _with_outputs(outputs):
  def model_fn(features, labels, mode, params):
    spec = models.model_fn(features, labels, mode, params)
    return spec._replace(export_outputs=outputs(spec))
  return model_fn


@pytest.mark.parametrize('model_fn,receiver_fn,error,match', [
    (models.model_fn, None, ValueError, 'needs a serving_input_receiver_fn'),
    (models.model_fn, lambda: v1.placeholder(tf.float32, [None, 4]),
     TypeError, 'must return a ServingInputReceiver'),
    (lambda features, labels, mode, params: he.HookEstimatorSpec(mode),
     serving_input_fn, ValueError,
     'PREDICT spec without predictions and without export_outputs'),
    (_with_outputs(lambda spec: {
        'a': he.export.PredictOutput(spec.predictions),
        'b': he.export.PredictOutput(spec.predictions)}),
     serving_input_fn, ValueError,
     r"signatures \['a', 'b'\] and none named 'serving_default'"),
    (_with_outputs(lambda spec: {'a': spec.predictions['logits']}),
     serving_input_fn, TypeError, r"export_outputs\['a'\] must be"),
])
def test_bad_exports_fail_and_leave_nothing(est, tmp_path, model_fn,
                                            receiver_fn, error, match):
  other = he.HookEstimator(model_fn, est.config, train_batch_size=8)
  with pytest.raises(error, match=match):
    other.export_saved_model(str(tmp_path / 'exports'), receiver_fn)
  assert not os.path.exists(str(tmp_path / 'exports')) or not os.listdir(
      str(tmp_path / 'exports'))


def test_export_needs_a_checkpoint(tmp_path):
  with pytest.raises(ValueError, match='no checkpoint to export; train first'):
    models.make(tmp_path).export_saved_model(str(tmp_path / 'e'),
                                             serving_input_fn)
