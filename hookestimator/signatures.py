"""What the framework passes to input_fn and model_fn, checked before
anything runs.

input_fn is called with keyword arguments only: `params` (a dict, in which
params['batch_size'] is the batch size to produce) and `config` (the
RunConfig), each only if input_fn takes it by that name (or takes
**kwargs). model_fn is called with features and labels by position, then
`mode`, `params` and `config` by name, each only if it takes them.

A function that needs any other argument would fail deep inside the graph
building with Python's own message (`<lambda>() missing 1 required
positional argument: 'p'`); these checks refuse it at once, naming the
function, the arguments it has and the ones the framework passes.
"""
import functools
import inspect

INPUT_FN_ARGS = ('params', 'config')
MODEL_FN_ARGS = ('mode', 'params', 'config')
_POSITIONAL_ARGS = ('features', 'labels')

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY,
               inspect.Parameter.POSITIONAL_OR_KEYWORD)
_INPUT_FN_PASSES = (
    "The framework calls input_fn with `params` (a dict; "
    "params['batch_size'] is the batch size to produce) and `config`, by "
    'name, each only if input_fn takes it')
_MODEL_FN_PASSES = (
    'The framework calls model_fn with features and labels by position, '
    'then `mode`, `params` and `config` by name, each only if model_fn '
    'takes it')


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


def check_model_fn(model_fn):
  """Raises ValueError unless `model_fn` can be called as the framework
  calls it, in every mode."""
  signature = _signature(model_fn)
  if signature is None:
    return
  parameters = list(signature.parameters.values())
  names = [p.name for p in parameters]
  takes_varargs = any(p.kind == p.VAR_POSITIONAL for p in parameters)
  described = _describe(model_fn, signature)
  if 'features' not in names and not takes_varargs:
    raise ValueError('model_fn %s must take a `features` argument; its '
                     'arguments are %s. %s.' % (described, names,
                                                _MODEL_FN_PASSES))
  positional = [p for p in parameters if p.kind in _POSITIONAL]
  if len(positional) < 2 and not takes_varargs:
    raise ValueError(
        'model_fn %s takes %d argument%s by position; it must take two, '
        'features and labels (labels are None where the input has none). '
        '%s.' % (described, len(positional),
                 '' if len(positional) == 1 else 's', _MODEL_FN_PASSES))
  for index, parameter in enumerate(positional):
    # Features and labels come by position: neither may land in an
    # argument named for something else, nor go past the first two.
    if index < 2:
      expected = _POSITIONAL_ARGS[index]
      wrong = (parameter.name != expected and
               parameter.name in _POSITIONAL_ARGS + MODEL_FN_ARGS)
      where = 'where the framework passes %s' % expected
    else:
      wrong = parameter.name in _POSITIONAL_ARGS
      where = ('as its argument %d, past the two the framework passes by '
               'position' % (index + 1))
    if wrong:
      raise ValueError('model_fn %s takes %r %s. %s: put features and labels '
                       'first.' % (described, parameter.name, where,
                                   _MODEL_FN_PASSES))
  unknown = [p.name for p in parameters[len(positional[:2]):]
             if _required(p) and (p.kind == p.POSITIONAL_ONLY or
                                  p.name not in MODEL_FN_ARGS)]
  if unknown:
    raise ValueError(
        'model_fn %s needs the argument%s %s, which the framework does not '
        'pass. %s: give the others defaults.' % (
            described, 's' if len(unknown) > 1 else '',
            ', '.join(repr(name) for name in unknown), _MODEL_FN_PASSES))


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
