"""What the framework passes to input_fn and model_fn, checked before
anything runs, and calling model_fn as Estimator calls it.

input_fn is called with keyword arguments only: `params` (a dict, in which
params['batch_size'] is the batch size to produce) and `config` (the
RunConfig), each only if input_fn takes it by that name (or takes
**kwargs). model_fn is called as Estimator calls it: `features` by name,
then `labels`, `mode`, `params` and `config` by name, each only if
model_fn takes it (or takes **kwargs). A model_fn without `labels` is
given none; input that has labels is then refused, as Estimator refuses
it. A model_fn taking *args and no `features` gets features and labels
by position.

A function that needs any other argument would fail deep inside the graph
building with Python's own message (`<lambda>() missing 1 required
positional argument: 'p'`); these checks refuse it at once, naming the
function, the arguments it has and the ones the framework passes.
"""
import functools
import inspect

INPUT_FN_ARGS = ('params', 'config')
MODEL_FN_ARGS = ('features', 'labels', 'mode', 'params', 'config')

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY,
               inspect.Parameter.POSITIONAL_OR_KEYWORD)
_INPUT_FN_PASSES = (
    "The framework calls input_fn with `params` (a dict; "
    "params['batch_size'] is the batch size to produce) and `config`, by "
    'name, each only if input_fn takes it')
_MODEL_FN_PASSES = (
    'The framework calls model_fn as Estimator does: with `features`, then '
    '`labels`, `mode`, `params` and `config`, all by name, each only if '
    'model_fn takes it')


def _signature(fn):
  """fn's signature, or None where Python cannot tell (some builtins)."""
  try:
    return inspect.signature(fn)
  except (TypeError, ValueError):
    return None


def _describe(fn, signature=None):
  """`name(arguments)`, as a message names a function."""
  if isinstance(fn, functools.partial):
    name = 'functools.partial(%s)' % _name(fn.func)
  else:
    name = _name(fn)
  signature = signature or _signature(fn)
  return name + (str(signature) if signature is not None else '(...)')


def _name(fn):
  return (getattr(fn, '__qualname__', None) or getattr(fn, '__name__', None)
          or type(fn).__name__)


def _required(parameter):
  return (parameter.default is parameter.empty and
          parameter.kind not in (parameter.VAR_POSITIONAL,
                                 parameter.VAR_KEYWORD))


def check_input_fn(input_fn, label='input_fn'):
  """Raises ValueError unless `input_fn` can be called with only what the
  framework passes. `label` names it in the message (train_input_fn...)."""
  signature = _signature(input_fn)
  if signature is None:
    return
  unknown = [p.name for p in signature.parameters.values()
             if _required(p) and (p.kind == p.POSITIONAL_ONLY or
                                  p.name not in INPUT_FN_ARGS)]
  if unknown:
    if len(unknown) == 1 and 'params' not in signature.parameters:
      hint = ('name that argument `params`, as TPUEstimator also requires '
              '(that is how it learns the batch size)')
    else:
      hint = 'give the others defaults'
    raise ValueError(
        '%s %s needs the argument%s %s, which the framework does not pass. '
        '%s: %s.' % (label, _describe(input_fn, signature),
                     's' if len(unknown) > 1 else '',
                     ', '.join(repr(name) for name in unknown),
                     _INPUT_FN_PASSES.replace('input_fn', label), hint))


def _model_fn_shape(signature):
  """(parameters by name, takes **kwargs, gets features and labels by
  position) of a model_fn's signature."""
  parameters = list(signature.parameters.values())
  by_name = {p.name: p for p in parameters
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
  takes_kwargs = any(p.kind == p.VAR_KEYWORD for p in parameters)
  takes_varargs = any(p.kind == p.VAR_POSITIONAL for p in parameters)
  return by_name, takes_kwargs, takes_varargs and 'features' not in by_name


def check_model_fn(model_fn):
  """Raises ValueError unless `model_fn` can be called as the framework
  calls it, in every mode."""
  signature = _signature(model_fn)
  if signature is None:
    return
  parameters = list(signature.parameters.values())
  by_name, _, by_position = _model_fn_shape(signature)
  described = _describe(model_fn, signature)
  if 'features' not in by_name and not by_position:
    raise ValueError(
        'model_fn %s must include features argument: it must take '
        '`features` by name; its arguments are %s. %s.' % (
            described, [p.name for p in parameters], _MODEL_FN_PASSES))
  # With features and labels by position, the first two positional
  # parameters take them, whatever their names.
  filled = set()
  if by_position:
    filled = set(p.name for p in parameters[:2] if p.kind in _POSITIONAL)
  unknown = [p.name for p in parameters
             if _required(p) and p.name not in filled and
             (p.kind == p.POSITIONAL_ONLY or p.name not in MODEL_FN_ARGS)]
  if unknown:
    raise ValueError(
        'model_fn %s has following not expected args: %s. It needs the '
        'argument%s %s, which the framework does not pass. %s: give the '
        'others defaults.' % (
            described, unknown, 's' if len(unknown) > 1 else '',
            ', '.join(repr(name) for name in unknown), _MODEL_FN_PASSES))


def call_model_fn(model_fn, features, labels, optional):
  """model_fn(features=..., labels=..., **optional), each argument passed
  only if model_fn takes it, as Estimator calls it (see the module's
  docstring). Raises ValueError when there are labels and model_fn takes
  none."""
  signature = _signature(model_fn)
  if signature is None:  # Python cannot tell: Estimator's names.
    return model_fn(features=features, labels=labels, **optional)
  by_name, takes_kwargs, by_position = _model_fn_shape(signature)
  kwargs = {name: value for name, value in optional.items()
            if takes_kwargs or name in by_name}
  if by_position:
    return model_fn(features, labels, **kwargs)
  if takes_kwargs or 'labels' in by_name:
    kwargs['labels'] = labels
  elif labels is not None:
    raise ValueError(
        'model_fn %s does not take labels, but input_fn returns labels. '
        'Give model_fn a `labels` argument, or make input_fn return the '
        'features alone.' % _describe(model_fn, signature))
  return model_fn(features=features, **kwargs)


def check_takes_no_arguments(fn, label):
  """Raises ValueError unless `fn` can be called with no arguments."""
  signature = _signature(fn)
  if signature is None:
    return
  required = [p.name for p in signature.parameters.values() if _required(p)]
  if required:
    raise ValueError(
        '%s %s needs the argument%s %s; the framework calls it with no '
        'arguments.' % (label, _describe(fn, signature),
                        's' if len(required) > 1 else '',
                        ', '.join(repr(name) for name in required)))
