"""device='gpu': training, evaluation and prediction with the model on the
GPU and the feeds on the host, where this machine has a GPU."""
import logging

import numpy as np
import pytest
import tensorflow as tf

import hookestimator as he
from hookestimator import compat
from tests import inference_models as models
from tests.conftest import framework_threads

v1 = tf.compat.v1

pytestmark = pytest.mark.skipif(
    not compat.physical_devices('GPU'),
    reason="TensorFlow finds no GPU on this machine (no CUDA device, or a "
    "CPU-only TensorFlow such as tensorflow-cpu): device='gpu' runs only "
    'where one exists')


def _placed_model(devices_seen):
  def model_fn(features, labels, mode, params):
    spec = models.model_fn(features, labels, mode, params)
    devices_seen.setdefault(mode, set()).add(
        (spec.loss if spec.loss is not None else
         spec.predictions['logits']).device)
    return spec
  return model_fn


def test_trains_evaluates_and_predicts_on_the_gpu(tmp_path, caplog):
  devices_seen = {}
  config = he.RunConfig(model_dir=str(tmp_path / 'model'), device='gpu',
                        iterations_per_loop=5, save_checkpoints_steps=100)
  est = he.HookEstimator(_placed_model(devices_seen), config=config,
                         train_batch_size=8)
  with caplog.at_level(logging.INFO, logger='hookestimator.devices'):
    est.train(models.train_input_fn, steps=40)
  assert 'Running on gpu; GPU devices found: ' in caplog.text
  assert est.checkpoint_step() == 40
  results = est.evaluate(
      lambda params: models.dataset(64, params['batch_size'], seed=1))
  assert results['global_step'] == 40
  assert results['accuracy'] > 0.8
  x, _ = models.data(10)
  predictions = list(est.predict(
      lambda params: tf.data.Dataset.from_tensor_slices(x).batch(
          params['batch_size'])))
  np.testing.assert_allclose([p['logits'] for p in predictions],
                             models.numpy_logits(est, x), rtol=1e-4,
                             atol=1e-5)
  for mode in (he.ModeKeys.TRAIN, he.ModeKeys.EVAL, he.ModeKeys.PREDICT):
    assert devices_seen[mode] == {'/device:GPU:0'}, mode
  assert framework_threads() == []
