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


def _with_hparams(features, labels, mode, hparams):
  del features, labels, mode, hparams


def _keyword_only(features, labels, *, mode, scale):
  del features, labels, mode, scale


def _without_features(inputs, labels, mode):
  del inputs, labels, mode


@pytest.mark.parametrize('model_fn, pattern', [
    (_with_hparams,
     r"model_fn _with_hparams\(features, labels, mode, hparams\) has "
     r"following not expected args: \['hparams'\]. It needs the argument "
     r"'hparams', which the framework does not pass"),
    (_keyword_only,
     r"model_fn _keyword_only\(features, labels, \*, mode, scale\) has "
     r"following not expected args: \['scale'\]. It needs the argument "
     r"'scale'"),
    (lambda x, features: None,
     r"model_fn <lambda>\(x, features\) has following not expected args: "
     r"\['x'\]"),
    (_without_features,
     r"model_fn _without_features\(inputs, labels, mode\) must include "
     r"features argument: it must take `features` by name; its arguments "
     r"are \['inputs', 'labels', 'mode'\]"),
], ids=['unknown', 'keyword-only', 'unknown-first', 'no-features'])
def test_a_model_fn_the_framework_cannot_call_is_refused_for_every_mode(
    tmp_path, model_fn, pattern):
  # The estimator is built for every mode at once: refusing it there is
  # refusing it before train, evaluate, predict and export run.
  with pytest.raises(ValueError, match=pattern) as raised:
    he.HookEstimator(model_fn, he.RunConfig(model_dir=str(tmp_path / 'm')))
  # TPUEstimator's tests match this phrase.
  if 'features argument' not in pattern:
    assert re.search('model_fn .* has following not expected args',
                     str(raised.value))
  assert ('The framework calls model_fn as Estimator does: with `features`, '
          'then `labels`, `mode`, `params` and `config`, all by name, each '
          'only if model_fn takes it') in str(raised.value)
  assert not os.path.exists(str(tmp_path / 'm'))


def _labels_first(labels, features, mode, params):
  """Estimator passes by name: the order of the arguments does not matter."""
  return models.model_fn(features, labels, mode, params)


def _model_fn_without_labels(features, mode, params):
  """As BERT's run_classifier: the labels are a feature."""
  return models.model_fn(features['x'], features['label'], mode, params)


def _features_labels_input_fn(params):
  return models.train_input_fn(params).map(lambda x, y: {'x': x, 'label': y})


def test_a_model_fn_without_labels_is_refused_input_with_labels(tmp_path):
  est = models.make(tmp_path, model=_model_fn_without_labels)
  with pytest.raises(ValueError, match=(
      r'model_fn _model_fn_without_labels\(features, mode, params\) does '
      r'not take labels, but input_fn returns labels. Give model_fn a '
      r'`labels` argument')):
    est.train(models.train_input_fn, steps=3)
  assert est.latest_checkpoint() is None
  assert framework_threads() == []


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


def _model_fn_with_extra_default(features, labels, mode, params, scale=1.0):
  return models.model_fn(features * scale, labels, mode, params)


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
    (_labels_first, models.train_input_fn),
    (_model_fn_without_labels, _features_labels_input_fn),
    (_model_fn_with_extra_default, models.train_input_fn),
], ids=['input-params-config', 'input-kwargs', 'input-no-arguments',
        'input-partial', 'model-features-labels', 'model-kwargs',
        'model-varargs', 'model-partial', 'model-labels-first',
        'model-without-labels', 'model-extra-default'])
def test_every_signature_the_framework_can_call_trains(tmp_path, model_fn,
                                                       input_fn):
  est = models.make(tmp_path, model=model_fn)
  est.train(input_fn, steps=3)
  assert est.checkpoint_step() == 3
