"""HookEstimatorSpec: what a model_fn returns, and the validation of
host_call, eval_metrics and predictions."""
import collections
import inspect

import tensorflow as tf

from hookestimator import compat
from hookestimator import metric_ops
from hookestimator.compat import v1

ModeKeys = compat.ModeKeys


def _hook_tuple(hooks, name):
  hooks = tuple(hooks or ())
  for hook in hooks:
    if not isinstance(hook, v1.train.SessionRunHook):
      raise TypeError('%s must be SessionRunHook instances, got %r' %
                      (name, hook))
  return hooks


def _accepts(fn, count):
  """Whether `fn` can be called with `count` positional arguments."""
  try:
    inspect.signature(fn).bind(*range(count))
    return True
  except TypeError:
    return False


def _accepts_keywords(fn, names):
  try:
    inspect.signature(fn).bind(**{name: None for name in names})
    return True
  except TypeError:
    return False


class HostCall(object):
  """A validated `host_call=(fn, tensors)` (or `eval_metrics`, same form).

  `tensors` is a list (passed to `fn` positionally) or a dict (passed by
  keyword). Each tensor has rank >= 1 with a leading batch axis, and,
  with `static`, a fully defined static shape, since its value crosses the
  outfeed once per step (checked where it does: a TRAIN spec's
  eval_metrics never cross it). `name` says which spec field this is in
  error messages.
  """

  def __init__(self, host_call, name='host_call', static=True):
    if (not isinstance(host_call, (tuple, list)) or len(host_call) != 2 or
        not callable(host_call[0])):
      raise TypeError('%s must be a pair (fn, tensors) with a callable '
                      'fn, got %r' % (name, host_call))
    fn, tensors = host_call
    if isinstance(tensors, dict):
      self.keys = sorted(tensors)
      flat = [tensors[k] for k in self.keys]
      if not _accepts_keywords(fn, self.keys):
        raise ValueError('%s fn %s does not accept the keyword '
                         'arguments %s given in its tensors dict' %
                         (name, _name(fn), self.keys))
    elif isinstance(tensors, (list, tuple)):
      self.keys = None
      flat = list(tensors)
      if not _accepts(fn, len(flat)):
        raise ValueError('%s fn %s does not take %d positional '
                         'arguments, one per tensor in %s' %
                         (name, _name(fn), len(flat), name))
    else:
      raise TypeError('%s tensors must be a list or a dict of '
                      'tensors, got %r' % (name, tensors))
    for index, tensor in enumerate(flat):
      label = self.keys[index] if self.keys else index
      if not isinstance(tensor, tf.Tensor):
        raise TypeError('%s tensor %r must be a tf.Tensor, got %r' %
                        (name, label, tensor))
      if tensor.shape.ndims is None or tensor.shape.ndims < 1:
        raise ValueError(
            '%s tensor %r (%s) has shape %s; %s tensors need '
            'rank >= 1 with a leading batch axis: reshape a scalar to [1]' %
            (name, label, tensor.name, tensor.shape, name))
      if static and not tensor.shape.is_fully_defined():
        raise ValueError(
            '%s tensor %r (%s) has shape %s; %s tensors need a '
            'fully defined static shape' % (name, label, tensor.name,
                                             tensor.shape, name))
    self.name = name
    self.fn = fn
    self.tensors = flat
    self.labels = list(self.keys) if self.keys else list(range(len(flat)))

  def call(self, values):
    """Calls fn on `values`, given in the order of `self.tensors`."""
    if self.keys is None:
      return self.fn(*values)
    return self.fn(**dict(zip(self.keys, values)))


def _name(fn):
  return getattr(fn, '__name__', repr(fn))


class HookEstimatorSpec(
    collections.namedtuple('HookEstimatorSpec', [
        'mode', 'loss', 'train_op', 'host_call', 'training_hooks',
        'scaffold_fn', 'predictions', 'eval_metrics', 'export_outputs',
        'evaluation_hooks', 'prediction_hooks'
    ])):
  """Ops and objects a model_fn returns to a HookEstimator.

  As TPUEstimatorSpec: `host_call=(fn, tensors)` runs `fn` on the host once
  per training step on that step's values; `eval_metrics=(metric_fn,
  tensors)` runs `metric_fn` on the host on the evaluated examples, and
  returns `{name: (value, update_op)}` as tf.compat.v1.metrics do;
  `predictions` is a tensor or a dict of tensors with a leading batch axis;
  `scaffold_fn` builds the Scaffold on the host.
  """

  def __new__(cls, mode, loss=None, train_op=None, host_call=None,
              training_hooks=None, scaffold_fn=None, predictions=None,
              eval_metrics=None, export_outputs=None, evaluation_hooks=None,
              prediction_hooks=None):
    # Their shapes are checked where they are outfed.
    if host_call is not None:
      HostCall(host_call, static=False)
    if eval_metrics is not None and not isinstance(eval_metrics,
                                                   metric_ops.MetricOps):
      HostCall(eval_metrics, name='eval_metrics', static=False)
    if predictions is not None and not (isinstance(predictions, dict) and
                                        not predictions):
      _flat_predictions(predictions)
    if scaffold_fn is not None and not callable(scaffold_fn):
      raise TypeError('scaffold_fn must be callable, got %r' % (scaffold_fn,))
    return super(HookEstimatorSpec, cls).__new__(
        cls, mode=mode, loss=loss, train_op=train_op, host_call=host_call,
        training_hooks=_hook_tuple(training_hooks, 'training_hooks'),
        scaffold_fn=scaffold_fn, predictions=predictions,
        eval_metrics=eval_metrics, export_outputs=export_outputs,
        evaluation_hooks=_hook_tuple(evaluation_hooks, 'evaluation_hooks'),
        prediction_hooks=_hook_tuple(prediction_hooks, 'prediction_hooks'))


class EstimatorSpec(
    collections.namedtuple('EstimatorSpec', [
        'mode', 'predictions', 'loss', 'train_op', 'eval_metric_ops',
        'export_outputs', 'training_chief_hooks', 'training_hooks',
        'scaffold', 'evaluation_hooks', 'prediction_hooks'
    ])):
  """tf.estimator.EstimatorSpec's fields, in its order, for the lines
  without tensorflow-estimator; a model_fn may return it as it would
  return tf.estimator's."""

  def __new__(cls, mode, predictions=None, loss=None, train_op=None,
              eval_metric_ops=None, export_outputs=None,
              training_chief_hooks=None, training_hooks=None, scaffold=None,
              evaluation_hooks=None, prediction_hooks=None):
    if scaffold is not None and not isinstance(scaffold, v1.train.Scaffold):
      raise TypeError('scaffold must be a tf.compat.v1.train.Scaffold, got '
                      '%r' % (scaffold,))
    return super(EstimatorSpec, cls).__new__(
        cls, mode, predictions, loss, train_op, dict(eval_metric_ops or {}),
        export_outputs, tuple(training_chief_hooks or ()),
        tuple(training_hooks or ()), scaffold, tuple(evaluation_hooks or ()),
        tuple(prediction_hooks or ()))


# What a model_fn may return besides a HookEstimatorSpec.
ESTIMATOR_SPEC_TYPES = (EstimatorSpec,) + compat.estimator_types(
    'EstimatorSpec')


def as_hook_spec(spec):
  """Accepts a HookEstimatorSpec or a plain EstimatorSpec (hookestimator's,
  or tf.estimator's where it exists)."""
  if isinstance(spec, HookEstimatorSpec):
    return spec
  if isinstance(spec, ESTIMATOR_SPEC_TYPES):
    eval_metrics = None
    if spec.mode == ModeKeys.EVAL and spec.eval_metric_ops:
      eval_metrics = metric_ops.MetricOps(spec.eval_metric_ops)
    scaffold = spec.scaffold
    return HookEstimatorSpec(
        mode=spec.mode, loss=spec.loss, train_op=spec.train_op,
        training_hooks=(tuple(spec.training_chief_hooks) +
                        tuple(spec.training_hooks)),
        scaffold_fn=(lambda: scaffold) if scaffold is not None else None,
        predictions=(None if isinstance(spec.predictions, dict) and
                     not spec.predictions else spec.predictions),
        export_outputs=spec.export_outputs or None,
        eval_metrics=eval_metrics,
        evaluation_hooks=spec.evaluation_hooks,
        prediction_hooks=spec.prediction_hooks)
  raise TypeError('model_fn must return a HookEstimatorSpec or an '
                  'EstimatorSpec, got %r' % (spec,))


def _check_loss(spec):
  if not isinstance(spec.loss, tf.Tensor):
    raise TypeError('loss must be a tf.Tensor, got %r' % (spec.loss,))
  if spec.loss.shape.ndims != 0:
    raise ValueError('loss must be a scalar, got shape %s from %s' %
                     (spec.loss.shape, spec.loss.name))
  if not spec.loss.dtype.is_floating:
    raise TypeError('loss must be a floating-point tensor, got %s' %
                    spec.loss.dtype.name)


def check_train_spec(spec):
  """Raises unless `spec` can train: a scalar float loss and a train_op."""
  if spec.loss is None:
    raise ValueError('model_fn returned a TRAIN spec without loss; '
                     'expected a scalar loss tensor')
  if spec.train_op is None:
    raise ValueError('model_fn returned a TRAIN spec without train_op; '
                     'expected the op that applies one training step')
  _check_loss(spec)


def _check_batch_major(label, tensor, batch_size, why, trimmed=False):
  """Raises unless `tensor` has a leading batch dimension of `batch_size`
  (with `trimmed`, one that may be unknown: model_fn saw a batch trimmed
  to its real rows) and, with `trimmed`, static dimensions after it."""
  shape = tensor.shape
  rows = (tf.compat.dimension_value(shape[0])
          if shape.ndims is not None and shape.ndims >= 1 else -1)
  if rows != batch_size and not (trimmed and rows is None):
    raise ValueError(
        '%s (%s) has shape %s; expected a %sleading batch dimension '
        'equal to params["batch_size"] = %d%s, %s' %
        (label, tensor.name, shape, '' if trimmed else 'static ',
         batch_size, ' (or unknown, as the batch has it)' if trimmed else '',
         why))
  if trimmed and not shape[1:].is_fully_defined():
    raise ValueError('%s (%s) has shape %s; it needs static dimensions after '
                     'the batch dimension, since it crosses the outfeed' %
                     (label, tensor.name, shape))


def check_eval_spec(spec, batch_size, trimmed=False, replicas=1):
  """Raises unless `spec` can evaluate; returns its eval_metrics HostCall
  (or None).

  It needs a scalar float loss, eval_metrics, or both. Where the input is
  padded (`batch_size` given), the eval_metrics tensors are batch-major,
  so that padded examples can be dropped; where model_fn saw the batch
  trimmed to its real rows (`trimmed`), their batch dimension may be
  unknown, as the batch's is.
  """
  if spec.loss is None and spec.eval_metrics is None:
    raise ValueError('model_fn returned an EVAL spec without loss and '
                     'without eval_metrics; expected a scalar loss tensor, '
                     'eval_metrics=(metric_fn, tensors), or both')
  if spec.loss is not None:
    _check_loss(spec)
  if spec.eval_metrics is None:
    return None
  if isinstance(spec.eval_metrics, metric_ops.MetricOps):
    if replicas > 1 or (batch_size is not None and not trimmed):
      raise ValueError(
          'model_fn returned an EstimatorSpec with eval_metric_ops %s, which '
          'update on every row model_fn sees; this evaluation runs %d '
          'replicas on padded batches, so they would count the padding and '
          'each replica apart. Return TPUEstimatorSpec(eval_metrics=('
          'metric_fn, tensors)): metric_fn runs once, on the real examples' %
          (spec.eval_metrics.names, replicas))
    return spec.eval_metrics
  metrics = HostCall(spec.eval_metrics, name='eval_metrics',
                     static=not trimmed)
  if batch_size is None:
    return metrics
  for label, tensor in zip(metrics.labels, metrics.tensors):
    _check_batch_major('eval_metrics tensor %r' % (label,), tensor,
                       batch_size, 'one row per example, so that padding '
                       'rows can be dropped before metric_fn sees them',
                       trimmed)
  return metrics


def _flat_predictions(predictions):
  """(keys, tensors): keys None for a single tensor."""
  if isinstance(predictions, dict):
    if not predictions:
      raise ValueError('predictions is an empty dict; expected a tensor or a '
                       'dict of tensors')
    keys = sorted(predictions)
    tensors = [predictions[k] for k in keys]
  else:
    keys, tensors = None, [predictions]
  for index, tensor in enumerate(tensors):
    if not isinstance(tensor, tf.Tensor):
      raise TypeError('predictions%s must be a tf.Tensor, got %r' % (
          '' if keys is None else '[%r]' % keys[index], tensor))
  return keys, tensors


def check_predict_spec(spec, batch_size, trimmed=False):
  """Raises unless `spec` can predict; returns (keys, tensors) of its
  predictions, keys None for a single tensor. With `trimmed` (model_fn saw
  a batch trimmed to its real rows) their batch dimension may be
  unknown."""
  if spec.predictions is None:
    raise ValueError('model_fn returned a PREDICT spec without predictions; '
                     'expected a tensor or a dict of tensors')
  keys, tensors = _flat_predictions(spec.predictions)
  for index, tensor in enumerate(tensors):
    label = 'predictions' if keys is None else 'predictions[%r]' % keys[index]
    _check_batch_major(label, tensor, batch_size,
                       'one row per example', trimmed)
    if not trimmed and not tensor.shape.is_fully_defined():
      raise ValueError('%s (%s) has shape %s; predictions need a fully '
                       'defined static shape' % (label, tensor.name,
                                                 tensor.shape))
  return keys, tensors
