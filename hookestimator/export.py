"""export_saved_model: a standard SavedModel for serving, and the serving
input receivers and export outputs it takes (tf.estimator.export's names,
for the lines without tensorflow-estimator).

The serving graph calls model_fn in PREDICT mode directly on the receiver's
features (no device loop, no feeding queues: a server feeds one request at
a time), restores the checkpoint and writes a SavedModel with the `serve`
tag. Its signatures come from the spec's export_outputs, or from its
predictions as the default serving signature, as tf.estimator does, so
TensorFlow's own loaders and servers read it.
"""
import collections
import logging
import os
import time

import tensorflow as tf

from hookestimator import compat
from hookestimator import loop as loop_lib
from hookestimator import signatures
from hookestimator import spec as spec_lib
from hookestimator.compat import v1
from hookestimator.inference import checkpoint_to_read

log = logging.getLogger(__name__)

ModeKeys = compat.ModeKeys
SERVING_TAG = v1.saved_model.tag_constants.SERVING
DEFAULT_SIGNATURE = (
    v1.saved_model.signature_constants.DEFAULT_SERVING_SIGNATURE_DEF_KEY)

ExportOutput = compat.ExportOutput
PredictOutput = compat.PredictOutput
ClassificationOutput = compat.ClassificationOutput
RegressionOutput = compat.RegressionOutput


def _as_tensor_dict(value, name, default_key):
  if isinstance(value, dict):
    result = dict(value)
  else:
    result = {default_key: value}
  for key, tensor in result.items():
    if not isinstance(key, str):
      raise ValueError('%s keys must be strings, got %r' % (name, key))
    if not isinstance(tensor, (tf.Tensor, tf.SparseTensor)):
      raise TypeError('%s[%r] must be a tf.Tensor or tf.SparseTensor, got %r'
                      % (name, key, tensor))
  return result


class ServingInputReceiver(collections.namedtuple(
    'ServingInputReceiver',
    ['features', 'receiver_tensors', 'receiver_tensors_alternatives'])):
  """What a serving_input_receiver_fn returns: the features model_fn sees,
  and the tensors a request feeds (tf.estimator.export's meaning)."""

  def __new__(cls, features, receiver_tensors,
              receiver_tensors_alternatives=None):
    if features is None:
      raise ValueError('ServingInputReceiver needs features, got None')
    features = _as_tensor_dict(features, 'features', 'feature')
    receiver_tensors = _as_tensor_dict(receiver_tensors, 'receiver_tensors',
                                       'input')
    return super(ServingInputReceiver, cls).__new__(
        cls, features, receiver_tensors, receiver_tensors_alternatives)


class TensorServingInputReceiver(collections.namedtuple(
    'TensorServingInputReceiver',
    ['features', 'receiver_tensors', 'receiver_tensors_alternatives'])):
  """A ServingInputReceiver whose features reach model_fn as one tensor,
  not a dict."""

  def __new__(cls, features, receiver_tensors,
              receiver_tensors_alternatives=None):
    if not isinstance(features, (tf.Tensor, tf.SparseTensor)):
      raise TypeError('TensorServingInputReceiver features must be a '
                      'tf.Tensor, got %r' % (features,))
    receiver_tensors = _as_tensor_dict(receiver_tensors, 'receiver_tensors',
                                       'input')
    return super(TensorServingInputReceiver, cls).__new__(
        cls, features, receiver_tensors, receiver_tensors_alternatives)


def build_raw_serving_input_receiver_fn(features, default_batch_size=None):
  """A serving_input_receiver_fn feeding placeholders shaped like
  `features` (a dict of tensors), the batch axis left open unless
  `default_batch_size` is given."""
  if not isinstance(features, dict) or not features:
    raise TypeError('features must be a non-empty dict of tensors, got %r' %
                    (features,))

  def serving_input_receiver_fn():
    placeholders = {}
    for name, tensor in features.items():
      shape = [default_batch_size] + tensor.shape.as_list()[1:]
      placeholders[name] = v1.placeholder(tensor.dtype, shape=shape,
                                          name=name)
    return ServingInputReceiver(placeholders, placeholders)
  return serving_input_receiver_fn


_RECEIVER_TYPES = ((ServingInputReceiver, TensorServingInputReceiver) +
                   compat.estimator_types('export.ServingInputReceiver') +
                   compat.estimator_types('export.TensorServingInputReceiver'))


def _check_arguments(export_dir_base, serving_input_receiver_fn,
                     assets_extra):
  if serving_input_receiver_fn is None:
    raise ValueError('export_saved_model needs a serving_input_receiver_fn: '
                     'a function returning a '
                     'ServingInputReceiver')
  if not callable(serving_input_receiver_fn):
    raise TypeError('serving_input_receiver_fn must be callable, got %r' %
                    (serving_input_receiver_fn,))
  signatures.check_takes_no_arguments(serving_input_receiver_fn,
                                      'serving_input_receiver_fn')
  if not isinstance(export_dir_base, (str, bytes, os.PathLike)) or not (
      export_dir_base):
    raise TypeError('export_dir_base must be a directory path, got %r' %
                    (export_dir_base,))
  if assets_extra is not None and (
      not isinstance(assets_extra, dict) or
      not all(isinstance(k, str) and isinstance(v, str)
              for k, v in assets_extra.items())):
    raise TypeError('assets_extra must be None or a dict {destination path '
                    'in assets.extra: source path}, got %r' % (assets_extra,))


def _check_receiver(receiver):
  if not isinstance(receiver, _RECEIVER_TYPES):
    raise TypeError('serving_input_receiver_fn must return a '
                    'ServingInputReceiver, got %r' %
                    (receiver,))
  if receiver.receiver_tensors_alternatives:
    raise ValueError('receiver_tensors_alternatives (%s) are not supported; '
                     'export one receiver per SavedModel' %
                     sorted(receiver.receiver_tensors_alternatives))


def signature_defs(spec, receiver_tensors):
  """{signature key: SignatureDef} from export_outputs or predictions."""
  outputs = spec.export_outputs
  if not outputs:
    if spec.predictions is None:
      raise ValueError('model_fn returned a PREDICT spec without predictions '
                       'and without export_outputs; export needs one of them')
    outputs = {DEFAULT_SIGNATURE:
               PredictOutput(spec.predictions)}
  outputs = dict(outputs)
  for key, output in outputs.items():
    if not isinstance(output, ExportOutput):
      raise TypeError('export_outputs[%r] must be an ExportOutput '
                      '(PredictOutput, ClassificationOutput, '
                      'RegressionOutput), got %r' %
                      (key, output))
  if DEFAULT_SIGNATURE not in outputs:
    if len(outputs) > 1:
      raise ValueError('export_outputs has the signatures %s and none named '
                       '%r; name the default one so' %
                       (sorted(outputs), DEFAULT_SIGNATURE))
    outputs[DEFAULT_SIGNATURE] = list(outputs.values())[0]
  return {key: output.as_signature_def(receiver_tensors)
          for key, output in outputs.items()}


def _new_export_dir(export_dir_base):
  """export_dir_base/<seconds since the epoch>, not yet taken."""
  stamp = int(time.time())
  while tf.io.gfile.exists(os.path.join(export_dir_base, str(stamp))):
    stamp += 1
  return os.path.join(export_dir_base, str(stamp))


def export_saved_model(estimator, export_dir_base, serving_input_receiver_fn,
                       assets_extra=None, as_text=False,
                       checkpoint_path=None):
  """See HookEstimator.export_saved_model."""
  _check_arguments(export_dir_base, serving_input_receiver_fn, assets_extra)
  export_dir_base = os.fsdecode(os.fspath(export_dir_base))
  checkpoint = checkpoint_to_read(estimator, checkpoint_path)
  if checkpoint is None:
    raise ValueError('model_dir %s holds no checkpoint to export; train '
                     'first' % estimator.model_dir)
  with tf.Graph().as_default() as graph:
    loop_lib.create_global_step(graph)
    receiver = serving_input_receiver_fn()
    _check_receiver(receiver)
    spec = spec_lib.as_hook_spec(
        estimator._call_model_fn_for_export(receiver.features))
    signatures = signature_defs(spec, receiver.receiver_tensors)
    scaffold = estimator._scaffold(spec, [])
    export_dir = _new_export_dir(export_dir_base)
    temp_dir = os.path.join(export_dir_base,
                            'temp-' + os.path.basename(export_dir))
    try:
      with v1.Session(config=estimator.config.session_config) as session:
        scaffold.saver.restore(session, checkpoint)
        builder = v1.saved_model.Builder(temp_dir)
        builder.add_meta_graph_and_variables(
            session, [SERVING_TAG], signature_def_map=signatures,
            main_op=scaffold.local_init_op, clear_devices=True,
            strip_default_attrs=True, saver=scaffold.saver)
        builder.save(as_text=as_text)
      for destination, source in (assets_extra or {}).items():
        target = os.path.join(temp_dir, 'assets.extra', destination)
        tf.io.gfile.makedirs(os.path.dirname(target))
        tf.io.gfile.copy(source, target, overwrite=True)
      tf.io.gfile.rename(temp_dir, export_dir)
    except BaseException:
      if tf.io.gfile.exists(temp_dir):
        tf.io.gfile.rmtree(temp_dir)
      raise
  log.info('Exported a SavedModel of %s to %s', checkpoint, export_dir)
  return export_dir
