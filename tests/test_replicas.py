"""Data-parallel replicas on this machine's CPU devices: the same training
as one replica at the same global batch, one copy of the variables in
checkpoints, host_call, evaluation and prediction over every replica."""
import signal

import numpy as np
import pytest
import tensorflow as tf

import hookestimator as he
from tests.conftest import framework_threads
from tests.test_signals import SendSignal
from tests.test_signals import recorded  # pylint: disable=unused-import

v1 = tf.compat.v1
FEATURES, CLASSES, EXAMPLES = 6, 3, 96


def _data(count=EXAMPLES):
  rng = np.random.RandomState(3)
  x = rng.normal(size=(count, FEATURES)).astype(np.float32)
  y = (np.argmax(x[:, :CLASSES], axis=1)).astype(np.int32)
  return x, y


def input_fn(params):
  x, y = _data()
  return tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(
      params['batch_size'], drop_remainder=True)


def make_model_fn(sum_gradients='cross_shard_optimizer', host_call=False,
                  fail_in_replica=None):
  def model_fn(features, labels, mode, params):
    hidden = tf.nn.relu(tf.matmul(features, v1.get_variable(
        'w1', [FEATURES, 8], initializer=v1.glorot_uniform_initializer(
            seed=1))))
    logits = tf.matmul(hidden, v1.get_variable(
        'w2', [8, CLASSES], initializer=v1.glorot_uniform_initializer(
            seed=2)))
    if fail_in_replica:
      # Fails in the replica whose batch holds the marker value.
      logits = tf.debugging.check_numerics(
          logits * tf.where(tf.reduce_any(features > 1e8), np.inf, 1.0),
          'replica input failed')
    if mode == he.ModeKeys.PREDICT:
      return he.HookEstimatorSpec(mode, predictions={
          'classes': tf.argmax(logits, axis=1), 'logits': logits})
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=labels, logits=logits))
    if mode == he.ModeKeys.EVAL:
      def metric_fn(labels, logits):
        return {'accuracy': v1.metrics.accuracy(labels,
                                                tf.argmax(logits, 1)),
                'examples': v1.metrics.true_positives(
                    tf.ones_like(labels, tf.bool),
                    tf.ones_like(labels, tf.bool))}
      return he.HookEstimatorSpec(mode, loss=loss,
                                  eval_metrics=(metric_fn, [labels, logits]))
    optimizer = v1.train.MomentumOptimizer(0.2, 0.9)
    global_step = v1.train.get_global_step()
    if sum_gradients == 'cross_shard_optimizer':
      train_op = v1.tpu.CrossShardOptimizer(optimizer).minimize(
          loss, global_step=global_step)
    else:
      grads_and_vars = optimizer.compute_gradients(loss)
      replicas = params.get('replicas', 1)
      train_op = optimizer.apply_gradients(
          [(he.cross_replica_sum(g) / replicas, v) for g, v in grads_and_vars],
          global_step=global_step)
    spec = he.HookEstimatorSpec(mode, loss=loss, train_op=train_op)
    if host_call:
      spec = spec._replace(host_call=(host_call, [
          tf.reshape(loss, [1]), tf.reshape(global_step, [1])]))
    return spec
  return model_fn


def _estimator(tmp_path, replicas, model_fn=None, name=None, batch=8,
               iterations_per_loop=5, **params):
  config = he.RunConfig(model_dir=str(tmp_path / (name or 'n%d' % replicas)),
                        iterations_per_loop=iterations_per_loop,
                        save_checkpoints_steps=10, num_replicas=replicas)
  return he.HookEstimator(model_fn or make_model_fn(), config,
                          params=dict(params, replicas=replicas),
                          train_batch_size=batch)


def _variables(est):
  return {name: est.get_variable_value(name) for name in ('w1', 'w2')}


@pytest.mark.parametrize('sum_gradients', ['cross_shard_optimizer',
                                           'cross_replica_sum'])
def test_replicas_train_as_one_at_the_same_global_batch(tmp_path,
                                                        sum_gradients):
  trained = {}
  for replicas in (1, 2, 4):
    est = _estimator(tmp_path, replicas, make_model_fn(sum_gradients))
    est.train(input_fn, steps=20)
    assert est.get_variable_value('global_step') == 20
    # One copy of the variables, under their own names, whatever the count.
    assert sorted(est.get_variable_names()) == [
        'global_step', 'w1', 'w1/Momentum', 'w2', 'w2/Momentum']
    trained[replicas] = _variables(est)
  for replicas in (2, 4):
    for name, value in trained[1].items():
      np.testing.assert_allclose(trained[replicas][name], value, atol=1e-5,
                                 err_msg='%s, %d replicas' % (name, replicas))
  assert framework_threads() == []


def _one_global_batch(params):
  # The same 8 examples every step, however they are split: the input
  # position of one replica count means nothing to a pipeline of another.
  x, y = _data(8)
  return tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(
      params['batch_size'], drop_remainder=True)


def test_a_checkpoint_moves_between_replica_counts(tmp_path):
  reference = _estimator(tmp_path, 1, name='reference')
  reference.train(_one_global_batch, steps=30)
  for replicas in (1, 4):
    est = _estimator(tmp_path, 2, name='resumed%d' % replicas)
    est.train(_one_global_batch, steps=10)
    resumed = _estimator(tmp_path, replicas, name='resumed%d' % replicas)
    resumed.train(_one_global_batch, steps=20)
    assert resumed.get_variable_value('global_step') == 30
    for name, value in _variables(reference).items():
      np.testing.assert_allclose(_variables(resumed)[name], value, atol=1e-5)


def test_host_call_gets_every_replicas_tensors(tmp_path):
  seen = []

  def host_call(loss, step):
    seen.append((loss.shape.as_list(), step.shape.as_list()))
    return {'replica_0_loss': loss[0], 'replica_1_loss': loss[1],
            'steps_agree': tf.cast(tf.equal(step[0], step[1]), tf.float32)}
  est = _estimator(tmp_path, 2, make_model_fn(host_call=host_call))
  est.train(input_fn, steps=5)
  assert [2] in [shapes[0] for shapes in seen]
  assert all(shapes == ([2], [2]) for shapes in seen)
  from tests.test_fidelity import events
  found = events(est.model_dir)
  assert sorted(s for s, _ in found['steps_agree']) == list(range(5))
  assert all(v == 1.0 for _, v in found['steps_agree'])
  # The framework's loss is the mean of the replicas' losses.
  for (step, loss), (_, first), (_, second) in zip(
      sorted(found['loss']), sorted(found['replica_0_loss']),
      sorted(found['replica_1_loss'])):
    assert loss == pytest.approx((first + second) / 2, rel=1e-5), step


def _eval_input_fn(count):
  def fn(params):
    x, y = _data(count)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(
        params['batch_size'])
  return fn


def test_evaluate_and_predict_cover_every_example_once_in_order(tmp_path):
  one = _estimator(tmp_path, 1, name='model')
  one.train(input_fn, steps=10)
  two = _estimator(tmp_path, 2, name='model')
  # 21 examples, global batch 8: the second replica's last batch is short.
  expected = one.evaluate(_eval_input_fn(21))
  results = two.evaluate(_eval_input_fn(21))
  assert results['examples'] == expected['examples'] == 21
  assert results['accuracy'] == pytest.approx(expected['accuracy'])
  # The loss of whole batches is the same; of padded ones, it counts the
  # padding rows of each replica's batch.
  assert two.evaluate(_eval_input_fn(24))['loss'] == pytest.approx(
      one.evaluate(_eval_input_fn(24))['loss'], rel=1e-5)
  predictions = list(two.predict(_eval_input_fn(21)))
  assert len(predictions) == 21
  np.testing.assert_allclose(
      np.stack([p['logits'] for p in predictions]),
      np.stack([p['logits'] for p in one.predict(_eval_input_fn(21))]),
      rtol=1e-5, atol=1e-6)
  assert framework_threads() == []


def test_an_error_in_one_replica_comes_out_with_its_message(tmp_path):
  def bad_input_fn(params):
    x, y = _data()
    x[params['batch_size'] * 3 + 1, 0] = 1e9  # in the second replica's batch
    return tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(
        params['batch_size'], drop_remainder=True)
  est = _estimator(tmp_path, 2, make_model_fn(fail_in_replica=True))
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match='replica input failed'):
    est.train(bad_input_fn, steps=10)
  assert framework_threads() == []


def test_replicas_without_a_cross_replica_sum_are_refused(tmp_path):
  def model_fn(features, labels, mode, params):
    loss = tf.reduce_mean(tf.square(tf.matmul(features, v1.get_variable(
        'w', [FEATURES, 1]))))
    return he.HookEstimatorSpec(mode, loss=loss, train_op=(
        v1.train.GradientDescentOptimizer(0.1).minimize(
            loss, global_step=v1.train.get_global_step())))
  est = _estimator(tmp_path, 2, model_fn)
  with pytest.raises(ValueError, match='no cross-replica sum, so 2 replicas '
                     'would train apart'):
    est.train(input_fn, steps=1)


def test_a_global_batch_the_replicas_do_not_divide_is_refused(tmp_path):
  est = _estimator(tmp_path, 4, batch=6)
  with pytest.raises(ValueError, match='train_batch_size=6 cannot be split '
                     'over 4 replicas'):
    est.train(input_fn, steps=1)


def test_resuming_replicas_continue_the_data_where_they_stopped(tmp_path):
  straight = _estimator(tmp_path, 2, name='straight', iterations_per_loop=3)
  straight.train(input_fn, steps=23)
  resumed = _estimator(tmp_path, 2, name='resumed', iterations_per_loop=3)
  resumed.train(input_fn, steps=10)  # Stops at step 10, mid-loop sizes.
  resumed.train(input_fn, steps=13)
  assert resumed.get_variable_value('global_step') == 23
  for name, value in _variables(straight).items():
    np.testing.assert_allclose(_variables(resumed)[name], value, atol=1e-6)


@pytest.mark.timeout(60)
def test_sigterm_stops_replicas_at_the_loop_boundary_with_a_checkpoint(
    tmp_path, recorded):
  est = _estimator(tmp_path, 2, iterations_per_loop=4)
  with pytest.raises(he.TrainingInterrupted) as info:
    est.train(input_fn, steps=1000,
              hooks=[SendSignal(signal.SIGTERM, on_run=3)])
  assert info.value.step == 12
  assert est.latest_checkpoint().endswith('model.ckpt-12')
  assert recorded[0] == []
  assert framework_threads() == []


def test_train_and_evaluate_with_replicas_reads_the_trained_variables(
    tmp_path):
  est = _estimator(tmp_path, 2)
  rounds = est.train_and_evaluate(input_fn, _eval_input_fn(24), max_steps=20,
                                  eval_every_steps=10)
  assert [r['global_step'] for r in rounds] == [10, 20]
  assert rounds[-1] == pytest.approx(
      _estimator(tmp_path, 1, name='n2').evaluate(_eval_input_fn(24)),
      rel=1e-5)


def _training_graph(tmp_path, replicas):
  from hookestimator import signals  # pylint: disable=g-import-not-at-top
  from hookestimator import training  # pylint: disable=g-import-not-at-top
  est = _estimator(tmp_path, replicas, name='graph%d' % replicas)
  return training.Training(est, input_fn, 10, None, [],
                           signals.SignalStop()).graph


def test_replica_copies_start_from_replica_0s_variables_not_their_own_draws(
    tmp_path):
  # Each copy's initialiser reads replica 0's variable: the random draws
  # of model_fn's initialisers are built once, not once per replica.
  def random_ops(graph):
    return sorted(op.name for op in graph.get_operations()
                  if op.type.startswith('Random'))
  assert len(random_ops(_training_graph(tmp_path, 1))) == 2
  graph = _training_graph(tmp_path, 4)
  assert len(random_ops(graph)) == 2, random_ops(graph)
  with graph.as_default():
    copies = [v for v in v1.local_variables()
              if v.op.name.startswith('replica_3/')]
    originals = {v.op.name: v for v in v1.global_variables()}
  by_name = {v.op.name.split('/', 1)[1]: v for v in copies}
  assert set(by_name) >= {'w1', 'w2', 'global_step'}, sorted(by_name)
  with v1.Session(graph=graph, config=v1.ConfigProto(
      device_count={'CPU': 4})) as session:
    session.run(v1.global_variables_initializer())
    session.run(originals['w1'].assign(tf.fill([FEATURES, 8], 7.0)))
    session.run(originals['global_step'].assign(12))
    session.run([by_name[name].initializer for name in ('w1', 'global_step')])
    assert session.run(by_name['global_step']) == 12
    np.testing.assert_array_equal(session.run(by_name['w1']),
                                  np.full([FEATURES, 8], 7.0, np.float32))
