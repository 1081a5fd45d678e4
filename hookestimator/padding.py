"""Host-side padding of evaluation and prediction input, and its markers.

Every batch the device is fed has exactly `batch_size` rows. A short batch
(the last one of a dataset batched without drop_remainder) is padded on the
host, and an endless run of all-padding batches follows the real ones, so
that the device loop never waits on an empty feed (a TPU's hardware infeed
cannot be closed) and every loop runs the steps it was given. Each batch
carries a per-row state alongside it:

  REAL      a real example: counted by metrics, returned by predict
  PADDING   a padding row of a short batch: dropped on the host
  PAST_END  a batch after the end of the data: dropped, and its first row
            tells the device loop that the input has ended

The padded dataset yields `(inputs, state)`, where `inputs` is
`(features, labels)` or `(features,)` when the input has no labels.

Off a TPU with one replica the device loop trims a short batch back to its
real rows before model_fn sees it (`trim`), and pads what model_fn returns
for the outfeed (`untrim`): model_fn runs on the batch as input_fn made it,
as under Estimator, and its loss counts no padding. On a TPU, and with
several replicas, model_fn sees the padded batch, as on TPUEstimator.
"""
import tensorflow as tf

from hookestimator.compat import DatasetBase, v1
from hookestimator.device_feeds import split_element

REAL = 1
PADDING = 0
PAST_END = -1


def _component_names(features, labels):
  names = []
  for root, part in (('features', features), ('labels', labels)):
    if part is None:
      continue
    paths = _paths(part)
    names.extend(root + path for path in paths)
  return names


def _paths(structure):
  if isinstance(structure, dict):
    return ['[%r]%s' % (key, sub) for key in sorted(structure)
            for sub in _paths(structure[key])]
  if isinstance(structure, (list, tuple)):
    return ['[%d]%s' % (index, sub) for index, part in enumerate(structure)
            for sub in _paths(part)]
  return ['']


def check_input(dataset, batch_size):
  """check_shapes for an evaluation or prediction dataset."""
  if not isinstance(dataset, DatasetBase):
    raise TypeError('input_fn must return a tf.data.Dataset, or tensors '
                    '(as from an iterator\'s get_next()), got %r' %
                    (dataset,))
  return check_shapes(v1.data.get_output_shapes(dataset), batch_size)


def check_shapes(shapes, batch_size):
  """Checks the element structure `shapes` of evaluation or prediction
  input; returns whether its short batches are padded (see pad_dataset).

  Input of fully static shapes feeds whole batches of any layout, as in
  training: nothing is padded. Input whose batches may be short (batched
  without drop_remainder: an unknown leading dimension) is padded to
  `batch_size` rows, so every component then needs a leading batch axis,
  unknown or equal to `batch_size`, and static shapes after it.
  """
  features, labels = split_element(shapes)
  names = _component_names(features, labels)
  shapes = tf.nest.flatten(features) + (
      [] if labels is None else tf.nest.flatten(labels))
  short = [(name, shape) for name, shape in zip(names, shapes)
           if not shape.is_fully_defined()]
  if not short:
    return False
  why = ('its batches can be short (%s has shape %s), so the last one is '
         'padded to params["batch_size"] = %d rows' %
         (short[0][0], short[0][1], batch_size))
  for name, shape in zip(names, shapes):
    if shape.ndims is None or shape.ndims < 1:
      raise ValueError(
          'input_fn dataset component %s has shape %s and cannot be padded: '
          '%s, which needs a leading batch dimension in every component. '
          'Batch with drop_remainder=True to feed whole batches of any shape'
          % (name, shape, why))
    rows = tf.compat.dimension_value(shape[0])
    if rows is not None and rows != batch_size:
      raise ValueError(
          'input_fn dataset component %s has shape %s and cannot be padded: '
          '%s, which needs a batch dimension equal to %d, or unknown, in '
          'every component' % (name, shape, why, batch_size))
    if not shape[1:].is_fully_defined():
      raise ValueError(
          'input_fn dataset component %s has shape %s; the %s to the model '
          'must have static shape after the batch dimension: the padding '
          'and the feeding queues need it (pad to a fixed size)' %
          (name, shape, name.split('[')[0]))
  return True


def _pad_rows(tensor, batch_size):
  rows = tf.shape(tensor)[0]
  paddings = [[0, batch_size - rows]] + [[0, 0]] * (tensor.shape.ndims - 1)
  padded = tf.pad(tensor, paddings)
  padded.set_shape([batch_size] + tensor.shape[1:].as_list())
  return padded


def _zeros(shape, dtype):
  if dtype == tf.string:
    return tf.fill(shape.as_list(), '')
  return tf.zeros(shape.as_list(), dtype)


def whole(inputs, batch_size):
  """(inputs, state) of a whole batch: every row REAL."""
  return inputs, tf.fill([batch_size], REAL)


def pad(inputs, batch_size):
  """(inputs, state) of a batch padded to exactly `batch_size` rows."""
  first = tf.nest.flatten(inputs)[0]
  rows = tf.shape(first)[0]
  check = tf.debugging.assert_less_equal(
      rows, batch_size, message='An input_fn batch has more rows than '
      'the batch size, %d' % batch_size)
  with tf.control_dependencies([check]):
    state = tf.where(tf.range(batch_size) < rows,
                     tf.fill([batch_size], REAL),
                     tf.fill([batch_size], PADDING))
    padded = tf.nest.map_structure(lambda t: _pad_rows(t, batch_size),
                                   inputs)
  return padded, state


def past_end(shapes, types, batch_size):
  """(inputs, state) of a batch past the end: zeros, every row PAST_END;
  `shapes` and `types` are those of a batch's inputs."""
  return (tf.nest.map_structure(_zeros, shapes, types),
          tf.fill([batch_size], PAST_END))


def pad_dataset(dataset, batch_size, pads):
  """The dataset as `(inputs, state)` batches, followed by endless PAST_END
  batches; `state` has `batch_size` rows. With `pads` (check_input's
  answer), short batches are padded to exactly `batch_size` rows;
  without, batches go as they are, every row of their state REAL."""
  has_labels = split_element(v1.data.get_output_shapes(dataset))[1] is not None

  def batch(*element):
    element = element if len(element) > 1 else element[0]
    inputs = split_element(element) if has_labels else (element,)
    return (pad if pads else whole)(inputs, batch_size)

  real = dataset.map(batch)
  types = v1.data.get_output_types(real)[0]
  shapes = v1.data.get_output_shapes(real)[0]
  ended = tf.data.Dataset.from_tensors(0).map(
      lambda _: past_end(shapes, types, batch_size)).repeat()
  return real.concatenate(ended), has_labels


def pad_tensors(features, labels, batch_size, pads):
  """pad_dataset for a batch given as tensors: (the `(inputs, state)` of
  the batch, that of a batch past the end)."""
  inputs = (features,) if labels is None else (features, labels)
  element = (pad if pads else whole)(inputs, batch_size)
  shapes = tf.nest.map_structure(lambda t: t.shape, element[0])
  types = tf.nest.map_structure(lambda t: t.dtype, element[0])
  return element, past_end(shapes, types, batch_size)


def rows_to_run(state, batch_size):
  """How many rows of a padded batch model_fn runs on where the padding is
  trimmed: its real rows; every row of a batch past the end (zeros, as
  where nothing is trimmed), so that model_fn never sees an empty batch."""
  real = tf.reduce_sum(tf.cast(tf.equal(state, REAL), tf.int32))
  return tf.where(real > 0, real, tf.constant(batch_size))


def trim(inputs, rows):
  """Each tensor of `inputs` (its None parts stay None) with its first
  `rows` rows only: a short batch as input_fn made it, its batch
  dimension unknown as input_fn's is."""
  return tf.nest.map_structure(lambda t: None if t is None else t[:rows],
                               inputs)


def untrim(tensor, rows, batch_size):
  """`tensor`, one row per example of a trimmed batch of `rows` rows,
  padded back to `batch_size` rows for the outfeed."""
  check = tf.debugging.assert_equal(
      tf.shape(tensor)[0], rows, message='A tensor model_fn returned for '
      'the outfeed (eval_metrics tensors, predictions) must have one row per '
      'example of its batch: %s' % tensor.name)
  with tf.control_dependencies([check]):
    return _pad_rows(tensor, batch_size)


def unpack_inputs(inputs):
  """(features, labels) of the `inputs` part of a padded batch."""
  if len(inputs) == 2:
    return inputs[0], inputs[1]
  return inputs[0], None
