"""What train() checks about model_dir before anything runs or is written:
that it can be written, and that a checkpoint in it belongs to this model."""
import errno
import os

from hookestimator.checkpoint import saved_name
from hookestimator.compat import v1


class CheckpointMismatchError(ValueError):
  """model_dir holds a checkpoint of a different model."""


def check_writable(model_dir):
  """Raises unless model_dir is, or can be made, a writable directory.

  Paths on remote filesystems (with a scheme, gs://...) are left to the
  first write.
  """
  if '://' in model_dir:
    return
  path = os.path.abspath(model_dir)
  existing = path
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise NotADirectoryError(
        errno.ENOTDIR, 'model_dir %s cannot be a directory: %s is a file; '
        'expected a directory for checkpoints and event files' %
        (model_dir, existing), model_dir)
  if not os.access(existing, os.W_OK | os.X_OK):
    what = 'model_dir' if existing == path else 'its parent %s' % existing
    raise PermissionError(
        errno.EACCES, 'model_dir %s is not writable (%s is not writable by '
        'this process); expected a directory where checkpoints and event '
        'files can be written' % (model_dir, what), model_dir)


def _shape(variable):
  return [int(d) for d in variable.shape.as_list()]


def check_checkpoint_matches(checkpoint_path, variables):
  """Raises CheckpointMismatchError unless `checkpoint_path` holds every
  one of `variables` with its shape and dtype."""
  if checkpoint_path is None:
    return
  reader = v1.train.NewCheckpointReader(checkpoint_path)
  shapes = reader.get_variable_to_shape_map()
  dtypes = reader.get_variable_to_dtype_map()
  problems = []
  for variable in variables:
    name = saved_name(variable)
    slice_info = getattr(variable, '_save_slice_info', None)
    shape = (list(slice_info.full_shape) if slice_info is not None else
             _shape(variable))
    dtype = variable.dtype.base_dtype
    if name not in shapes:
      problems.append('%s (%s %s) is not in the checkpoint' %
                      (name, dtype.name, shape))
    elif list(shapes[name]) != shape:
      problems.append('%s has shape %s in the model but %s in the checkpoint'
                      % (name, shape, list(shapes[name])))
    elif dtypes[name] != dtype:
      problems.append('%s is %s in the model but %s in the checkpoint' %
                      (name, dtype.name, dtypes[name].name))
  if problems:
    shown = problems[:5] + (['and %d more' % (len(problems) - 5)]
                            if len(problems) > 5 else [])
    raise CheckpointMismatchError(
        'model_dir %s holds checkpoint %s of a different model: %s. Expected '
        'a checkpoint of this model; train it in a new model_dir.' %
        (os.path.dirname(checkpoint_path), os.path.basename(checkpoint_path),
         '; '.join(shown)))
