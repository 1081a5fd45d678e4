"""The models in models/: they learn, on both TensorFlow lines."""
import math

import numpy as np
import pytest

import hookestimator as he
from hookestimator.models import digits_mlp as digits_lib
from hookestimator.models import gpt2 as gpt2_lib
from tests.conftest import read_scalars


def train(model, model_dir, steps, batch_size, iterations_per_loop=50):
  config = he.RunConfig(model_dir=str(model_dir), save_checkpoints_steps=steps,
                        iterations_per_loop=iterations_per_loop)
  est = he.HookEstimator(model.model_fn, config=config,
                         train_batch_size=batch_size)
  return est.train(model.train_input_fn, max_steps=steps)


def test_digits_mlp_reaches_90_percent_held_out(tmp_path):
  est = train(digits_lib.digits_mlp(), tmp_path, steps=300, batch_size=64)
  _, (x, y) = digits_lib.load_split(297)
  hidden = np.maximum(x.dot(est.get_variable_value('hidden0/kernel')) +
                      est.get_variable_value('hidden0/bias'), 0)
  logits = (hidden.dot(est.get_variable_value('logits/kernel')) +
            est.get_variable_value('logits/bias'))
  accuracy = np.mean(np.argmax(logits, 1) == y)
  assert accuracy >= 0.90
  # The framework's evaluation over the same 297 examples (batches of 64,
  # the last one short) agrees.
  results = est.evaluate(digits_lib.digits_mlp().eval_input_fn)
  assert results['accuracy'] == pytest.approx(accuracy, abs=1e-6)


def test_digits_split_is_fixed_and_disjoint():
  (train_x, _), (held_x, held_y) = digits_lib.load_split(297)
  (_, _), (again_x, again_y) = digits_lib.load_split(297)
  assert len(train_x) == 1500 and len(held_x) == 297
  np.testing.assert_array_equal(held_x, again_x)
  np.testing.assert_array_equal(held_y, again_y)
  train_rows = {row.tobytes() for row in train_x}
  # The digits data holds a few duplicate images; nearly all are unseen.
  assert sum(row.tobytes() in train_rows for row in held_x) < 10


def test_gpt2_loss_falls_from_uniform_to_below_3_nats(tmp_path):
  model = gpt2_lib.gpt2(seq_len=64, num_layers=1, d_model=64, num_heads=2,
                        learning_rate=1e-2, warmup_steps=20, decay_steps=200)
  train(model, tmp_path, steps=200, batch_size=16)
  losses = read_scalars(tmp_path)['loss']
  # Each step's loss at the step after it, as Estimator writes it.
  assert abs(losses[1] - math.log(256)) < 0.5
  assert np.mean([losses[s] for s in range(191, 201)]) < 3.0
  bits = read_scalars(tmp_path)['gpt2/bits_per_byte']
  assert bits[199] == pytest.approx(losses[200] / math.log(2), rel=1e-5)
  learning_rate = read_scalars(tmp_path)['gpt2/learning_rate']
  assert learning_rate[10] == pytest.approx(1e-2 * 10 / 20, rel=1e-5)
  assert max(learning_rate.values()) == pytest.approx(1e-2, rel=1e-5)
  est = he.HookEstimator(model.model_fn, config=he.RunConfig(
      model_dir=str(tmp_path)), train_batch_size=16)
  results = est.evaluate(model.eval_input_fn, steps=4)
  assert results['global_step'] == 200
  assert results['bits_per_byte'] == pytest.approx(
      results['loss'] / math.log(2), rel=1e-4)
  assert results['bits_per_byte'] < 5.0  # uniform over bytes is 8


def test_gpt2_reads_the_corpus_in_whole_records(tmp_path):
  (tmp_path / 'a.txt').write_bytes(bytes(range(10)) * 3)   # 30 bytes
  (tmp_path / 'b.txt').write_bytes(b'xyz')                  # too short
  files = gpt2_lib.corpus_files(str(tmp_path / '*.txt'), min_bytes=9)
  assert files == [str(tmp_path / 'a.txt')]
  import tensorflow as tf
  with tf.Graph().as_default():
    dataset = gpt2_lib.byte_records(files, seq_len=8, batch_size=1,
                                    training=False)
    inputs, targets = tf.compat.v1.data.make_one_shot_iterator(
        dataset).get_next()
    with tf.compat.v1.Session() as session:
      records = []
      try:
        while True:
          records.append(session.run([inputs, targets]))
      except tf.errors.OutOfRangeError:
        pass
  # 30 bytes hold three 9-byte records; the 3-byte tail is skipped.
  assert len(records) == 3
  data = (list(range(10)) * 3)
  for i, (x, y) in enumerate(records):
    assert list(x[0]) == data[9 * i:9 * i + 8]
    assert list(y[0]) == data[9 * i + 1:9 * i + 9]


@pytest.mark.parametrize('kwargs, message', [
    (dict(corpus_glob='/nonexistent/*.txt'),
     "corpus_glob '/nonexistent/*.txt' matches nothing"),
    (dict(d_model=30, num_heads=4), 'd_model=30 must be a multiple of'),
])
def test_gpt2_bad_arguments(kwargs, message):
  with pytest.raises(ValueError, match=message.replace('*', r'\*')):
    gpt2_lib.gpt2(**kwargs)


def test_gpt2_default_corpus_is_the_standard_library():
  files = gpt2_lib.corpus_files(gpt2_lib.default_corpus_glob(), 129)
  assert any(f.endswith('os.py') for f in files)
  train_files, heldout = gpt2_lib.split_files(files, 20)
  assert heldout and not set(heldout) & set(train_files)
  assert len(train_files) + len(heldout) == len(files)
