"""HookEstimatorSpec: what a model_fn returns, and host_call validation."""
import collections
import inspect

import tensorflow as tf

from hookestimator.compat import v1

ModeKeys = tf.estimator.ModeKeys


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
  """A validated `host_call=(fn, tensors)`.

  `tensors` is a list (passed to `fn` positionally) or a dict (passed by
  keyword). Each tensor has rank >= 1 with a leading batch axis, and a
  static shape, since its value crosses the outfeed once per step.
  """

  def __init__(self, host_call):
    if (not isinstance(host_call, (tuple, list)) or len(host_call) != 2 or
        not callable(host_call[0])):
      raise TypeError('host_call must be a pair (fn, tensors) with a callable '
                      'fn, got %r' % (host_call,))
    fn, tensors = host_call
    if isinstance(tensors, dict):
      self.keys = sorted(tensors)
      flat = [tensors[k] for k in self.keys]
      if not _accepts_keywords(fn, self.keys):
        raise ValueError('host_call fn %s does not accept the keyword '
                         'arguments %s given in its tensors dict' %
                         (_name(fn), self.keys))
    elif isinstance(tensors, (list, tuple)):
      self.keys = None
      flat = list(tensors)
      if not _accepts(fn, len(flat)):
        raise ValueError('host_call fn %s does not take %d positional '
                         'arguments, one per tensor in host_call' %
                         (_name(fn), len(flat)))
    else:
      raise TypeError('host_call tensors must be a list or a dict of '
                      'tensors, got %r' % (tensors,))
    for index, tensor in enumerate(flat):
      label = self.keys[index] if self.keys else index
      if not isinstance(tensor, tf.Tensor):
        raise TypeError('host_call tensor %r must be a tf.Tensor, got %r' %
                        (label, tensor))
      if tensor.shape.ndims is None or tensor.shape.ndims < 1:
        raise ValueError(
            'host_call tensor %r (%s) has shape %s; host_call tensors need '
            'rank >= 1 with a leading batch axis: reshape a scalar to [1]' %
            (label, tensor.name, tensor.shape))
      if not tensor.shape.is_fully_defined():
        raise ValueError(
            'host_call tensor %r (%s) has shape %s; host_call tensors need a '
            'fully defined static shape' % (label, tensor.name, tensor.shape))
    self.fn = fn
    self.tensors = flat

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
        'scaffold_fn', 'predictions', 'eval_metrics', 'export_outputs'
    ])):
  """Ops and objects a model_fn returns to a HookEstimator.

  As TPUEstimatorSpec: `host_call=(fn, tensors)` runs `fn` on the host once
  per step on that step's values; `scaffold_fn` builds the Scaffold on the
  host.
  """

  def __new__(cls, mode, loss=None, train_op=None, host_call=None,
              training_hooks=None, scaffold_fn=None, predictions=None,
              eval_metrics=None, export_outputs=None):
    if host_call is not None:
      HostCall(host_call)
    if scaffold_fn is not None and not callable(scaffold_fn):
      raise TypeError('scaffold_fn must be callable, got %r' % (scaffold_fn,))
    return super(HookEstimatorSpec, cls).__new__(
        cls, mode=mode, loss=loss, train_op=train_op, host_call=host_call,
        training_hooks=_hook_tuple(training_hooks, 'training_hooks'),
        scaffold_fn=scaffold_fn, predictions=predictions,
        eval_metrics=eval_metrics, export_outputs=export_outputs)


def as_hook_spec(spec):
  """Accepts a HookEstimatorSpec or a plain tf.estimator.EstimatorSpec."""
  if isinstance(spec, HookEstimatorSpec):
    return spec
  if isinstance(spec, tf.estimator.EstimatorSpec):
    scaffold = spec.scaffold
    return HookEstimatorSpec(
        mode=spec.mode, loss=spec.loss, train_op=spec.train_op,
        training_hooks=spec.training_hooks,
        scaffold_fn=(lambda: scaffold) if scaffold is not None else None,
        predictions=spec.predictions, export_outputs=spec.export_outputs)
  raise TypeError('model_fn must return a HookEstimatorSpec or a '
                  'tf.estimator.EstimatorSpec, got %r' % (spec,))


def check_train_spec(spec):
  """Raises unless `spec` can train: a scalar float loss and a train_op."""
  if spec.loss is None:
    raise ValueError('model_fn returned a TRAIN spec without loss; '
                     'expected a scalar loss tensor')
  if spec.train_op is None:
    raise ValueError('model_fn returned a TRAIN spec without train_op; '
                     'expected the op that applies one training step')
  if not isinstance(spec.loss, tf.Tensor):
    raise TypeError('loss must be a tf.Tensor, got %r' % (spec.loss,))
  if spec.loss.shape.ndims != 0:
    raise ValueError('loss must be a scalar, got shape %s from %s' %
                     (spec.loss.shape, spec.loss.name))
  if not spec.loss.dtype.is_floating:
    raise TypeError('loss must be a floating-point tensor, got %s' %
                    spec.loss.dtype.name)
