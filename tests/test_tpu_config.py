"""hookestimator.tpu's RunConfig and TPUConfig as TPUEstimator's tests
check them: the same values accepted, the same errors (type and phrase)
for bad ones, master and evaluation_master from the arguments, a cluster
resolver or TF_CONFIG, and time-based iterations_per_loop. Where
tensorflow-estimator is installed each case is also checked against it."""
import json
import re

import numpy as np
import pytest
import tensorflow as tf

import hookestimator as he
from hookestimator import compat
from hookestimator import tpu
from tests import inference_models as models

v1 = tf.compat.v1
STOCK = v1.estimator.tpu if compat.ESTIMATOR is not None else None
PV2 = tpu.InputPipelineConfig.PER_HOST_V2


@pytest.fixture
def tf_config(monkeypatch):
  """Sets TF_CONFIG to the JSON of a dict."""
  def set_tf_config(value):
    monkeypatch.setenv('TF_CONFIG', json.dumps(value))
  monkeypatch.delenv('TF_CONFIG', raising=False)
  return set_tf_config


def _both(module_call):
  """[module_call(hookestimator.tpu)] plus, with tensorflow-estimator,
  module_call(TensorFlow's tpu module)."""
  return [module_call(module) for module in (tpu, STOCK) if module]


# TPUConfig and RunConfig arguments TPUEstimator refuses, with the error
# type and the phrase its tests match.
REFUSED = [
    (dict(num_shards=0), ValueError, 'must be positive'),
    (dict(num_shards=-2), ValueError, 'must be positive'),
    (dict(num_shards=2.5), TypeError, 'must be int'),
    (dict(iterations_per_loop=0), ValueError, 'must be positive'),
    (dict(iterations_per_loop=-1), ValueError, 'must be positive'),
    (dict(iterations_per_loop='-1h'), ValueError, 'must be positive'),
    (dict(iterations_per_loop='-1m'), ValueError, 'must be positive'),
    (dict(iterations_per_loop='-1s'), ValueError, 'must be positive'),
    (dict(iterations_per_loop='1d'), ValueError,
     'Invalid TPUConfig `iterations_per_loop` value'),
    (dict(iterations_per_loop=2.5), ValueError, 'must be positive'),
    (dict(num_cores_per_replica=7), ValueError,
     'num_cores_per_replica must be 1, 2, 4, 8, 16, 32, 64, 128; got 7'),
    (dict(num_cores_per_replica=256), ValueError,
     'num_cores_per_replica must be 1, 2, 4, 8, 16, 32, 64, 128; got 256'),
    (dict(num_cores_per_replica=2, per_host_input_for_training=PV2,
          input_partition_dims=[[1, 2], [1], [1]]), ValueError,
     'input_partition_dims must be a list/tuple with one or two elements'),
    (dict(num_cores_per_replica=2, input_partition_dims=[[1, 2, 1, 1]]),
     ValueError, 'input_partition_dims is only supported in PER_HOST_V2 mode'),
    (dict(per_host_input_for_training=PV2,
          input_partition_dims=[[1, 2, 1, 1]]), ValueError,
     'input_partition_dims requires setting num_cores_per_replica'),
    (dict(eval_training_input_configuration=PV2), ValueError,
     'eval_training_input_configuration must be PER_HOST_V1 or SLICED'),
    (dict(initial_infeed_sleep_secs=-5), ValueError, 'must be positive'),
]


@pytest.mark.parametrize('kwargs, error, phrase', REFUSED)
def test_bad_tpu_config_values_raise_as_tpu_estimator(kwargs, error, phrase):
  messages = []
  for module in _both(lambda m: m):
    with pytest.raises(error) as raised:
      module.RunConfig(tpu_config=module.TPUConfig(**kwargs))
    messages.append(str(raised.value))
  assert all(phrase in message for message in messages), messages
  # hookestimator's message also names the bad value.
  bad = list(kwargs.values())[-1]
  assert repr(bad) in messages[0] or str(bad) in messages[0]


@pytest.mark.parametrize('value, length', [
    (1, (1, 'count')), (100, (100, 'count')), ('5', (5, 'count')),
    (np.int64(3), (3, 'count')), ('300s', (300, 'seconds')),
    ('1m', (60, 'seconds')), ('1h', (3600, 'seconds')),
])
def test_iterations_per_loop_in_steps_or_time(value, length):
  config = tpu.RunConfig(tpu_config=tpu.TPUConfig(iterations_per_loop=value))
  assert config.tpu_config.iterations_per_loop is value
  assert tuple(config.tpu_config.loop_length) == length
  if length[1] == 'seconds':
    assert (config.iterations_per_loop, config.loop_seconds) == (1, length[0])
  else:
    assert (config.iterations_per_loop, config.loop_seconds) == (length[0],
                                                                 None)
  if STOCK is not None:
    from tensorflow_estimator.python.estimator.tpu import util  # pylint: disable=g-import-not-at-top
    assert tuple(util.parse_iterations_per_loop(value)) == length


def test_model_parallel_values_are_accepted_off_a_tpu(tmp_path):
  tpu_config = tpu.TPUConfig(num_cores_per_replica=2,
                             per_host_input_for_training=PV2,
                             input_partition_dims=[[1, 2], None])
  est = tpu.TPUEstimator(models.model_fn, config=tpu.RunConfig(
      model_dir=str(tmp_path), tpu_config=tpu_config), train_batch_size=8)
  est.train(models.train_input_fn, steps=2)
  assert est.get_variable_value('global_step') == 2


def test_model_parallelism_needs_per_host_input_as_in_tpu_estimator():
  for module in _both(lambda m: m):
    config = module.RunConfig(tpu_config=module.TPUConfig(
        num_cores_per_replica=2, per_host_input_for_training=False))
    with pytest.raises(ValueError) as raised:
      module.TPUEstimator(models.model_fn, config=config, train_batch_size=8,
                          use_tpu=True)
    assert 'Model parallelism only supports per host input' in str(
        raised.value)


def test_per_host_input_flags_are_kept_as_modes():
  for module in _both(lambda m: m):
    modes = module.InputPipelineConfig
    assert module.TPUConfig(per_host_input_for_training=True
                           ).per_host_input_for_training == modes.PER_HOST_V1
    assert module.TPUConfig(per_host_input_for_training=False
                           ).per_host_input_for_training == modes.PER_SHARD_V1


# (TF_CONFIG or None, RunConfig's master arguments, (master, evaluation
# master)), as tpu_config_test.py has them.
MASTERS = [
    (None, {}, ('', '')),
    (None, dict(master='_m', evaluation_master='_e'), ('_m', '_e')),
    (None, dict(master='_m'), ('_m', '_m')),
    (None, dict(evaluation_master='_e'), ('', '_e')),
    ({'session_master': '_m', 'eval_session_master': '_e'}, {}, ('_m', '_e')),
    ({'session_master': '_m'}, {}, ('_m', '_m')),
    ({'session_master': '_m', 'eval_session_master': '_e'},
     dict(master='_new', evaluation_master='_new_e'), ('_new', '_new_e')),
    ({'session_master': '_m', 'eval_session_master': '_e'},
     dict(master='_new'), ('_new', '_e')),
    ({'cluster': {'chief': ['host0:0']}, 'task': {'type': 'evaluator',
                                                   'index': 0}},
     dict(master='_something'), ('_something', '')),
    ({'cluster': {'chief': ['host0:0'], 'worker': ['host1:1']},
      'task': {'type': 'worker', 'index': 0}}, {},
     ('grpc://host1:1', 'grpc://host1:1')),
    ({'cluster': {'chief': ['host0:0']}, 'task': {'type': 'chief', 'index': 0},
      'environment': 'cloud', 'rpc_layer': 'grpc'}, {}, ('', '')),
]


@pytest.mark.parametrize('env, kwargs, masters', MASTERS)
def test_master_and_evaluation_master(tf_config, env, kwargs, masters):
  if env is not None:
    tf_config(env)
  for module in _both(lambda m: m):
    config = module.RunConfig(**kwargs)
    assert (config.master, config.evaluation_master) == masters, module


def test_tpu_job_name_from_tf_config(tf_config):
  assert tpu.RunConfig().tpu_config.tpu_job_name is None
  tf_config({'service': {'tpu_worker_job_name': '_my_name'}})
  for module in _both(lambda m: m):
    assert module.RunConfig().tpu_config.tpu_job_name == '_my_name'


@pytest.mark.parametrize('env', [
    {'session_master': '_m', 'eval_session_master': '_e'},
    {'service': {'tpu_worker_job_name': 'w'}},
    {'environment': 'cloud', 'rpc_layer': 'grpc+verbs', 'unknown_key': 1},
    # Cloud ML Engine's single-machine jobs: one "master" task.
    {'cluster': {'master': ['127.0.0.1:2222']},
     'task': {'type': 'master', 'index': 0}, 'environment': 'cloud'},
])
def test_tf_config_keys_estimator_reads_or_ignores_are_accepted(tf_config,
                                                                 env):
  tf_config(env)
  for config in [he.RunConfig(), tpu.RunConfig()] + _both(
      lambda m: m.RunConfig()):
    assert config.model_dir is None or config.model_dir
  assert he.RunConfig().cluster is None  # One task: runs in this process.


def test_a_service_that_is_not_a_dict_is_refused(tf_config):
  tf_config({'service': 'tpu'})
  for make in [he.RunConfig, tpu.RunConfig] + _both(lambda m: m.RunConfig):
    with pytest.raises(TypeError) as raised:
      make()
    assert 'If "service" is set in TF_CONFIG, it must be a dict' in str(
        raised.value)


def test_rpc_layer_is_refused_only_where_a_cluster_uses_it(tf_config):
  tf_config({'cluster': {'chief': ['127.0.0.1:2222'],
                         'worker': ['127.0.0.1:2223']},
             'task': {'type': 'chief'}, 'rpc_layer': 'grpc+verbs'})
  with pytest.raises(ValueError, match="rpc_layer 'grpc\\+verbs'"):
    he.RunConfig()
  assert tpu.RunConfig().cluster is None  # A TPU program runs in-process.


def test_model_dir_from_tf_config(tf_config, tmp_path):
  tf_config({'model_dir': str(tmp_path)})
  for make in [he.RunConfig, tpu.RunConfig] + _both(lambda m: m.RunConfig):
    assert make().model_dir == str(tmp_path)
    assert make(model_dir=str(tmp_path)).model_dir == str(tmp_path)
    with pytest.raises(ValueError) as raised:
      make(model_dir=str(tmp_path / 'other'))
    assert 'must have the same value as the model_dir in TF_CONFIG' in str(
        raised.value)
  tf_config({'model_dir': ''})
  for make in [he.RunConfig, tpu.RunConfig] + _both(lambda m: m.RunConfig):
    with pytest.raises(ValueError, match='model_dir in TF_CONFIG should be '
                       'non-empty'):
      make()


def _resolvers():
  cluster_resolver = tf.distribute.cluster_resolver
  return [
      cluster_resolver.TPUClusterResolver(tpu='grpc://10.0.0.1:8470'),
      cluster_resolver.SimpleClusterResolver(
          tf.train.ClusterSpec({'worker': ['10.0.0.2:8470']}),
          master='grpc://10.0.0.2:8470'),
  ]


@pytest.mark.parametrize('index', [0, 1])
def test_a_cluster_resolver_gives_the_masters(index, tmp_path):
  resolver = _resolvers()[index]
  for module in _both(lambda m: m):
    config = module.RunConfig(cluster=resolver, model_dir=str(tmp_path))
    assert config.master == resolver.master()
    assert config.evaluation_master == resolver.master()
    with pytest.raises(ValueError, match='Both master and cluster are set'):
      module.RunConfig(cluster=resolver, master='')
    with_cluster_def = v1.ConfigProto()
    with_cluster_def.cluster_def.CopyFrom(
        resolver.cluster_spec().as_cluster_def())
    with pytest.raises(ValueError, match='You cannot provide a '
                       'ClusterResolver and session_config.cluster_def'):
      module.RunConfig(cluster=resolver, session_config=with_cluster_def)
  config = tpu.RunConfig(cluster=resolver, model_dir=str(tmp_path),
                         evaluation_master='_e')
  assert config.cluster_resolver is resolver
  assert config.evaluation_master == '_e'
  # Nothing connects to it: the model trains on this machine.
  est = tpu.TPUEstimator(models.model_fn, config=config, train_batch_size=8)
  est.train(models.train_input_fn, steps=2)
  assert est.get_variable_value('global_step') == 2
  assert est.config.cluster_resolver is resolver


def test_a_cluster_that_is_no_resolver_is_refused():
  with pytest.raises(TypeError, match="cluster must be a cluster resolver.*"
                     "'10.0.0.1:8470'"):
    tpu.RunConfig(cluster='10.0.0.1:8470')


def test_replace_takes_a_tpu_config():
  for module in _both(lambda m: m):
    config = module.RunConfig(tpu_config=module.TPUConfig(5),
                              tf_random_seed=3)
    new = config.replace(tpu_config=module.TPUConfig('60s'),
                         save_summary_steps=7)
    assert new.tpu_config.iterations_per_loop == '60s'
    assert (new.save_summary_steps, new.tf_random_seed) == (7, 3)
    assert config.tpu_config.iterations_per_loop == 5
  new = tpu.RunConfig(tpu_config=tpu.TPUConfig(5)).replace(
      tpu_config=tpu.TPUConfig('60s'))
  assert (new.iterations_per_loop, new.loop_seconds) == (1, 60)


class LoopCounter(v1.train.SessionRunHook):
  """Counts the loops (session runs) a run makes."""

  def __init__(self):
    self.loops = 0

  def after_run(self, run_context, run_values):
    self.loops += 1


def test_time_based_loops_train_evaluate_and_predict(tmp_path):
  config = tpu.RunConfig(model_dir=str(tmp_path), save_checkpoints_steps=100,
                         tpu_config=tpu.TPUConfig('300s'))
  est = tpu.TPUEstimator(models.model_fn, config=config, train_batch_size=8,
                         predict_batch_size=2)
  counter = LoopCounter()
  est.train(models.train_input_fn, max_steps=7, hooks=[counter])
  assert est.get_variable_value('global_step') == 7
  # One step, then loops sized to last 300 s: this model's 6 steps left
  # take far less, so one loop takes them.
  assert counter.loops == 2
  # As TPUEstimator on a TPU: the evaluation's steps in one loop.
  counter = LoopCounter()
  results = est.evaluate(lambda params: models.dataset(48, 8), steps=5,
                         hooks=[counter])
  assert counter.loops == 1
  assert results['global_step'] == 7
  # Prediction: one step a loop.
  counter = LoopCounter()
  predictions = list(est.predict(
      lambda params: models.dataset(5, 2, labels=False), hooks=[counter]))
  assert len(predictions) == 5
  assert counter.loops >= 3


@pytest.mark.parametrize('call, error, phrase', [
    (lambda est: est.train(models.train_input_fn, steps=12.3), TypeError,
     'must be int'),
    (lambda est: est.train(models.train_input_fn, steps=-32), ValueError,
     'Must specify steps > 0'),
    (lambda est: est.train(models.train_input_fn, max_steps=0), ValueError,
     'Must specify max_steps > 0'),
    (lambda est: est.evaluate(models.train_input_fn, steps=12.3), TypeError,
     'must be int'),
    (lambda est: est.evaluate(models.train_input_fn, steps=-321), ValueError,
     'must be positive'),
])
def test_steps_are_checked_with_tpu_estimators_phrases(tmp_path, call, error,
                                                       phrase):
  est = tpu.TPUEstimator(models.model_fn, config=tpu.RunConfig(
      model_dir=str(tmp_path)), train_batch_size=8)
  with pytest.raises(error) as raised:
    call(est)
  assert phrase in str(raised.value)


@pytest.mark.parametrize('make, error, phrase', [
    (lambda m: m.TPUEstimator(models.model_fn, config=m.RunConfig(),
                              train_batch_size=1.0), TypeError,
     'must be int'),
    (lambda m: m.TPUEstimator(models.model_fn, config=m.RunConfig(),
                              train_batch_size=-8), ValueError,
     'must be positive'),
    (lambda m: m.TPUEstimator(models.model_fn, config=m.RunConfig(),
                              train_batch_size=8, eval_batch_size=0),
     ValueError, 'must be positive'),
    (lambda m: m.TPUEstimator(models.model_fn, config=m.RunConfig(),
                              train_batch_size=8, params={'batch_size': 2}),
     ValueError, 'are reserved keys'),
])
def test_estimator_arguments_are_checked_with_tpu_estimators_phrases(
    make, error, phrase):
  for module in _both(lambda m: m):
    with pytest.raises(error) as raised:
      make(module)
    assert phrase in str(raised.value), module


def _input_fn_without_params(dataset_size):
  """An input_fn the framework cannot call: the batch check comes first."""
  raise AssertionError('input_fn called with %r' % dataset_size)


@pytest.mark.parametrize('mode, call', [
    ('train', lambda est: est.train(_input_fn_without_params, steps=1)),
    ('eval', lambda est: est.evaluate(_input_fn_without_params, steps=1)),
    ('predict', lambda est: list(est.predict(_input_fn_without_params))),
])
def test_a_batch_the_replicas_do_not_divide_says_so_first(tmp_path, mode,
                                                          call):
  config = tpu.RunConfig(model_dir=str(tmp_path),
                         tpu_config=tpu.TPUConfig(2, num_shards=4))
  sizes = dict(train_batch_size=8, eval_batch_size=8, predict_batch_size=8)
  sizes[mode + '_batch_size'] = 6
  est = tpu.TPUEstimator(models.model_fn, config=config, **sizes)
  with pytest.raises(ValueError) as raised:
    call(est)
  assert re.search('%s.*must be divisible' % mode, str(raised.value))
  assert '=6 cannot be split over 4 replicas' in str(raised.value)


def test_a_missing_train_batch_size_says_so(tmp_path):
  for module in _both(lambda m: m):
    with pytest.raises(ValueError) as raised:
      module.TPUEstimator(models.model_fn, config=module.RunConfig(),
                          predict_batch_size=2, use_tpu=True)
    assert '`train_batch_size` cannot be `None`' in str(raised.value)
  est = tpu.TPUEstimator(models.model_fn, config=tpu.RunConfig(
      model_dir=str(tmp_path)), predict_batch_size=2, use_tpu=False)
  with pytest.raises(ValueError, match='`train_batch_size` cannot be `None`'):
    est.train(models.train_input_fn, steps=1)
