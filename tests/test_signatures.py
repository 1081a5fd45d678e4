"""input_fn and model_fn that cannot take what the framework passes are
refused before anything runs, in every mode, with a message naming the
function, the arguments it has and the ones the framework passes; every
signature the framework can call still works."""
import functools
import os
import pathlib
import re

import pytest
import tensorflow as tf

import hookestimator as he
from tests import inference_models as models
from tests.conftest import framework_threads

v1 = tf.compat.v1


def _state(directory):
  found = {}
  for root, _, names in os.walk(directory):
    for name in names:
      path = os.path.join(root, name)
      found[path] = os.stat(path).st_mtime_ns
  return found


@pytest.fixture(scope='module')
def trained_dir(tmp_path_factory):
  return models.trained(tmp_path_factory.mktemp('signatures')).model_dir


@pytest.fixture
def est(trained_dir):
  return models.make(pathlib.Path(trained_dir).parent,
                     name=os.path.basename(trained_dir))


def _input_fn_with_mode(params, mode):
  del mode
  return models.train_input_fn(params)


def _serving_input_fn(batch_size):
  x = v1.placeholder(tf.float32, [batch_size, models.NUM_FEATURES])
  return he.export.TensorServingInputReceiver(x, {'x': x})


def _eval_input_fn(params):
  return models.dataset(16, params['batch_size'])


# `MODES[mode](est, fn)` passes fn where the mode takes an input function,
# named LABELS.get(mode, 'input_fn').
MODES = {
    'train': lambda est, fn: est.train(fn, steps=3),
    'evaluate': lambda est, fn: est.evaluate(fn),
    'predict': lambda est, fn: est.predict(fn),
    'train_and_evaluate-train': lambda est, fn: est.train_and_evaluate(
        fn, _eval_input_fn, max_steps=20, eval_every_steps=5),
    'train_and_evaluate-eval': lambda est, fn: est.train_and_evaluate(
        models.train_input_fn, fn, max_steps=20, eval_every_steps=5),
}
LABELS = {'train_and_evaluate-train': 'train_input_fn',
          'train_and_evaluate-eval': 'eval_input_fn'}


@pytest.mark.parametrize('mode', sorted(MODES))
@pytest.mark.parametrize('bad_fn, described, missing, hint', [
    (lambda p: models.train_input_fn(p), r'<lambda>\(p\)', "'p'",
     'name that argument `params`, as TPUEstimator also requires'),
    (_input_fn_with_mode, r'_input_fn_with_mode\(params, mode\)', "'mode'",
     'give the others defaults'),
    (lambda x, y: None, r'<lambda>\(x, y\)', "'x', 'y'",
     'give the others defaults'),
], ids=['lambda-p', 'params-and-mode', 'two-unknown'])
def test_an_input_fn_the_framework_cannot_call_is_refused_before_any_run(
    est, mode, bad_fn, described, missing, hint):
  before = _state(est.model_dir)
  label = LABELS.get(mode, 'input_fn')
  with pytest.raises(ValueError) as raised:
    MODES[mode](est, bad_fn)
  message = str(raised.value)
  assert message.startswith(label + ' ')
  assert re.search(described, message), message
  assert 'needs the argument%s %s, which the framework does not pass' % (
      's' if ',' in missing else '', missing) in message
  assert ("with `params` (a dict; params['batch_size'] is the batch size to "
          'produce) and `config`, by name') in message
  assert hint in message
  assert _state(est.model_dir) == before
  assert framework_threads() == []


def test_export_refuses_a_serving_input_receiver_fn_that_needs_arguments(
    est, tmp_path):
  with pytest.raises(ValueError, match=(
      r"serving_input_receiver_fn _serving_input_fn\(batch_size\) needs the "
      r"argument 'batch_size'; the framework calls it with no arguments")):
    est.export_saved_model(str(tmp_path / 'export'), _serving_input_fn)
  assert not os.path.exists(str(tmp_path / 'export'))


def _features_mode_params(features, mode, params):
  del features, mode, params


def _features_only(features):
  del features


def _with_hparams(features, labels, mode, hparams):
  del features, labels, mode, hparams


def _keyword_only(features, labels, *, mode, scale):
  del features, labels, mode, scale


@pytest.mark.parametrize('model_fn, pattern', [
    (_features_mode_params,
     r"model_fn _features_mode_params\(features, mode, params\) takes 'mode' "
     r'where the framework passes labels'),
    (_features_only,
     r'model_fn _features_only\(features\) takes 1 argument by position; it '
     r'must take two, features and labels'),
    (_with_hparams,
     r"model_fn _with_hparams\(features, labels, mode, hparams\) needs the "
     r"argument 'hparams', which the framework does not pass"),
    (_keyword_only,
     r"model_fn _keyword_only\(features, labels, \*, mode, scale\) needs the "
     r"argument 'scale'"),
    (lambda x, features: None,
     r"model_fn <lambda>\(x, features\) takes 'features' where the framework "
     r'passes labels'),
], ids=['labels-missing', 'one-positional', 'unknown', 'keyword-only',
        'features-second'])
def test_a_model_fn_the_framework_cannot_call_is_refused_for_every_mode(
    tmp_path, model_fn, pattern):
  # The estimator is built for every mode at once: refusing it there is
  # refusing it before train, evaluate, predict and export run.
  with pytest.raises(ValueError, match=pattern) as raised:
    he.HookEstimator(model_fn, he.RunConfig(model_dir=str(tmp_path / 'm')))
  assert ('The framework calls model_fn with features and labels by '
          'position, then `mode`, `params` and `config` by name, each only '
          'if model_fn takes it') in str(raised.value)
  assert not os.path.exists(str(tmp_path / 'm'))


def _fixed_batch_input_fn():
  return models.train_input_fn({'batch_size': 8})


def _input_fn_with_extra(params, scale):
  del scale
  return models.train_input_fn(params)


def _model_fn_without_mode_or_params(features, labels):
  return models.model_fn(features, labels, he.ModeKeys.TRAIN, {})


def _model_fn_with_kwargs(features, labels, **kwargs):
  assert sorted(kwargs) == ['config', 'mode', 'params']
  return models.model_fn(features, labels, kwargs['mode'], kwargs['params'])


def _model_fn_with_varargs(*args, **kwargs):
  return models.model_fn(*args, kwargs['mode'], kwargs['params'])


def _model_fn_with_scale(features, labels, mode, params, scale):
  return models.model_fn(features * scale, labels, mode, params)


@pytest.mark.parametrize('model_fn, input_fn', [
    (models.model_fn, lambda params, config: models.train_input_fn(params)),
    (models.model_fn, lambda **kwargs: models.train_input_fn(
        kwargs['params'])),
    (models.model_fn, _fixed_batch_input_fn),
    (models.model_fn, functools.partial(_input_fn_with_extra, scale=2)),
    (_model_fn_without_mode_or_params, models.train_input_fn),
    (_model_fn_with_kwargs, models.train_input_fn),
    (_model_fn_with_varargs, models.train_input_fn),
    (functools.partial(_model_fn_with_scale, scale=1.0),
     models.train_input_fn),
], ids=['input-params-config', 'input-kwargs', 'input-no-arguments',
        'input-partial', 'model-features-labels', 'model-kwargs',
        'model-varargs', 'model-partial'])
def test_every_signature_the_framework_can_call_trains(tmp_path, model_fn,
                                                       input_fn):
  est = models.make(tmp_path, model=model_fn)
  est.train(input_fn, steps=3)
  assert est.checkpoint_step() == 3
