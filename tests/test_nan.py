"""The NaN check: on by default, it stops at the first step whose loss is
NaN or Inf and names it; off, training goes on."""
import numpy as np
import pytest
import tensorflow as tf

import hookestimator as he
from tests.conftest import framework_threads, input_fn, linear_model_fn

v1 = tf.compat.v1


def _loss_goes_bad_at(bad_step, value):
  def model_fn(features, labels, mode, params):
    spec = linear_model_fn(features, labels, mode, params)
    step = v1.train.get_global_step().read_value()
    loss = spec.loss * tf.where(step >= bad_step, np.float32(value),
                                np.float32(1))
    return spec._replace(loss=loss)
  return model_fn


@pytest.mark.timeout(60)
@pytest.mark.parametrize('value', [np.nan, np.inf])
def test_the_first_bad_step_is_named(make_estimator, value):
  est = make_estimator(model_fn=_loss_goes_bad_at(5, value),
                       iterations_per_loop=4, save_checkpoints_steps=4)
  with pytest.raises(he.NanLossError, match=r'NaN or Inf at step 5\b') as info:
    est.train(input_fn, steps=100)
  assert info.value.step == 5
  assert isinstance(info.value.__cause__, tf.errors.InvalidArgumentError)
  assert est.latest_checkpoint().endswith('model.ckpt-4')
  assert framework_threads() == []


@pytest.mark.timeout(60)
def test_without_the_check_training_goes_on(make_estimator):
  est = make_estimator(model_fn=_loss_goes_bad_at(5, np.nan),
                       iterations_per_loop=4, check_nan_loss=False)
  est.train(input_fn, steps=12)
  assert est.get_variable_value('global_step') == 12
