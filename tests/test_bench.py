"""The benchmarks run: bench.peers --quick end to end (children, tables,
targets, files); the targets' spread rule; the evaluate and predict
systems agree on one checkpoint. Speeds are never asserted."""
import argparse
import os
import subprocess
import sys

import pytest
import tensorflow as tf

from hookestimator import compat

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IS_TF2 = compat.IS_TF2
# tf.estimator exists only where tensorflow-estimator is installed (TF 2.15
# and older): elsewhere the bench has no Estimator rows at all.
HAS_ESTIMATOR = compat.ESTIMATOR is not None
ESTIMATOR = 'tf.estimator.Estimator'
NO_ESTIMATOR_NOTE = 'Note: tf.estimator does not exist on this line'
# The smoke run took about 10 minutes on a shared 2-core machine at a load
# average near 10 (its 11 children start at once). The deadline bounds a
# hang, not the speed: loaded suite runs (load 12) took the old quick run
# past its 420 s, so it leaves 2.5x that slack.
TIMEOUT = 1500
BARE1 = ('the bare loop, 1 step per session.run', '1')
RESULTS = ('met', 'MISSED', 'MISSED (spread crosses target)', '-')


def _header(text, heading):
  """The header cells of the table under `### heading`."""
  lines = text.split('\n')
  line = lines[lines.index('### %s' % heading) + 2]
  return [cell.strip() for cell in line.strip('|').split('|')]


def _rows(text, heading):
  """The table rows under `### heading`, as lists of cells."""
  lines = text.split('\n')
  start = lines.index('### %s' % heading)
  rows = []
  for line in lines[start + 4:]:
    if not line.startswith('|'):
      break
    rows.append([cell.strip() for cell in line.strip('|').split('|')])
  return rows


@pytest.mark.timeout(TIMEOUT + 60)
def test_peers_quick(tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'bench.peers', '--quick', '--out',
       str(tmp_path)], cwd=REPO_ROOT, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, universal_newlines=True, timeout=TIMEOUT)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
  out = result.stdout

  limit = ('the limit (bare while_loop)', '-')
  estimator = [(ESTIMATOR, '-')] if HAS_ESTIMATOR else []
  mlp = [(row[0], row[1]) for row in _rows(out, 'mlp')]
  expected = [limit, BARE1] + estimator
  if IS_TF2:
    expected += [('Keras Model.fit', '1'), ('Keras Model.fit', '100')]
  expected += [('hookestimator', ipl) for ipl in ('1', '10', '100', '1000')]
  assert mlp == expected
  # Every ratio column is a peer this line has, and every cell is filled.
  header = _header(out, 'mlp')
  peers = ['ratio to the limit',
           'ratio to the bare loop, 1 step per session.run'] + (
      ['ratio to tf.estimator.Estimator'] if HAS_ESTIMATOR else []) + (
          ['ratio to Keras spe 1', 'ratio to Keras spe 100'] if IS_TF2
          else [])
  assert header[4:] == peers
  for row in _rows(out, 'mlp'):
    assert len(row) == len(header) and all(row), row
  # Only the mlp table has the one-step bare loop's column.
  assert 'ratio to the bare loop, 1 step per session.run' not in _header(
      out, 'gpt2-tiny')
  assert [(row[0], row[1]) for row in _rows(out, 'gpt2-tiny')] == (
      [limit] + estimator + [('hookestimator', '1'), ('hookestimator', '10'),
                             ('hookestimator', '100')])
  assert 'Note: No Keras rows' in out
  # The per-example pipeline: the same pipeline in a bare while_loop, and
  # every peer this line has.
  assert [(row[0], row[1]) for row in _rows(out, 'pipeline')] == (
      [limit] + estimator + ([('Keras Model.fit', '100')] if IS_TF2 else [])
      + [('hookestimator', '100')])
  for row in _rows(out, 'pipeline'):
    assert len(row) == len(_header(out, 'pipeline')) and all(row), row
  # The replica rows: N = 1 and 2 at the same global batch, and the
  # unsummed reference that the all-reduce's share is measured against.
  replicas = _rows(out, 'replicas')
  assert [(row[0], row[1], row[2]) for row in replicas] == [
      (workload, count, '%d (%d)' % (batch, per_replica))
      for workload, batch in (('mlp', 64), ('gpt2-tiny', 32))
      for count, per_replica in (('1', batch), ('2', batch // 2),
                                 ('2, gradients not summed', batch // 2))]
  header = _header(out, 'replicas')
  assert header[5:7] == ['ratio to 1 replica',
                         'all-reduce share of step time']
  for row in replicas:
    assert len(row) == len(header) and all(row), row
    # Only the summed N = 2 row has a share and gradient bytes.
    assert (row[6] == '-') == (row[1] != '2'), row
    assert (row[7] == '-') == (row[1] != '2'), row
  assert 'Trainable parameters (float32): mlp 19,210, gpt2-tiny ' in out
  assert len(_rows(out, 'host_call')) == 2
  assert 'host_call cost:' in out
  assert [row[0] for row in _rows(out, 'input-bound')] == [
      'input alone (a while_loop pulling batches from the pipeline)',
      'compute alone (the mlp limit)', 'hookestimator'] + (
          [ESTIMATOR] if HAS_ESTIMATOR else [])
  # Without tensorflow-estimator the report says why, and nothing else in
  # it (tables, targets, the per-repeat list) names the Estimator.
  if HAS_ESTIMATOR:
    assert NO_ESTIMATOR_NOTE not in out
  else:
    assert NO_ESTIMATOR_NOTE in out
    report = out[out.index('Training throughput'):]
    assert [line for line in report.split('\n') if ESTIMATOR in line] == [
        line for line in report.split('\n')
        if line.startswith(NO_ESTIMATOR_NOTE)]
  # evaluate and predict: one timed call per repeat, every system.
  for workload, what in (('evaluate', 'accuracy, mean loss (last call)'),
                         ('predict', 'examples read (last call)')):
    rows = _rows(out, workload)
    assert [(row[0], row[1]) for row in rows] == (
        [('the bare loop', '-')] + estimator + [('hookestimator', '100')])
    header = _header(out, workload)
    assert header == (['system', 'iterations_per_loop', 'seconds per call',
                       'examples/sec'] +
                      (['ratio to tf.estimator.Estimator'] if HAS_ESTIMATOR
                       else []) + ['ratio to the bare loop', what])
    for row in rows:
      assert len(row) == len(header) and all(row), row
      assert 'n/a' not in row, row
      if workload == 'predict':
        assert row[-1] == '65,573', row
  assert 'read %d examples, expected' not in out
  assert [row[0] for row in _rows(out, 'memory')] == [
      'RSS (VmRSS), MB', 'OS threads', 'Python threads (active_count)']
  targets = [row[0] for row in _rows(out, 'targets')]
  assert targets == _expected_targets()
  for row in _rows(out, 'targets'):
    assert row[2] in RESULTS, row
  # The new rows' targets are measured (a --quick training rate may be
  # NaN: its tiny calls' difference can be <= 0 on a loaded machine).
  for row in _rows(out, 'targets'):
    if row[0].startswith(('evaluate:', 'predict:')):
      assert row[1] != 'not measured' and row[2] != '-', row

  version = '.'.join(tf.__version__.split('.')[:2])
  markdown = tmp_path / ('peers-tf%s.md' % version)
  figure = tmp_path / ('peers-tf%s.png' % version)
  assert markdown.is_file() and figure.is_file()
  text = markdown.read_text()
  assert text.startswith('TensorFlow %s' % tf.__version__)
  assert '### targets' in text and '### gpt2-tiny' in text
  assert '### pipeline' in text
  assert '### replicas' in text
  assert (NO_ESTIMATOR_NOTE in text) == (not HAS_ESTIMATOR)
  assert figure.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def _expected_targets():
  """The targets this line's run lists, in order."""
  one_step = ESTIMATOR if HAS_ESTIMATOR else BARE1[0]
  inference = ESTIMATOR if HAS_ESTIMATOR else 'the bare loop'
  expected = [
      'mlp: hookestimator ipl 100 >= 0.9x the limit',
      'mlp: 1 step per loop, hookestimator ipl 1 >= 0.95x %s' % one_step,
      'pipeline: hookestimator ipl 100 >= 0.9x the limit']
  if IS_TF2:
    expected.append('pipeline: hookestimator ipl 100 >= 1.1x Keras '
                    'Model.fit spe 100')
  return expected + [
      'gpt2-tiny: hookestimator ipl 100 >= 0.97x the limit',
      'replicas: mlp N=2 examples/sec >= 0.95x N=1 at the same global batch',
      'replicas: gpt2-tiny N=2 examples/sec >= 0.95x N=1 at the same global '
      'batch',
      'host_call: cost <= 10%',
      'input-bound: hookestimator ipl 100 >= 0.85x min(input alone, '
      'compute alone)',
      'evaluate: hookestimator ipl 100 examples/sec >= 1.0x %s' % inference,
      'predict: hookestimator ipl 100 examples/sec >= 1.0x %s' % inference,
      'memory: RSS growth < 5%',
      'memory: OS thread growth < 5%']


def test_spread_and_verdict():
  from bench import peers_report as report  # pylint: disable=g-import-not-at-top
  assert report.spread([0.9, float('nan'), 0.96, None, 0.93]) == (
      0.93, 0.9, 0.96)
  assert report.spread([]) is None and report.spread(None) is None
  assert report.spread_text([0.9, 0.96, 0.93], '%.2fx') == (
      '0.93x (0.90x to 0.96x)')
  assert report.spread_text([0.9], '%.2fx') == '0.90x'
  assert report.spread_text([0.05, -0.02], '%.1f%%', 100.0) == (
      '1.5% (-2.0% to 5.0%)')
  minimum = report.at_least(0.9)
  assert report.verdict([0.91, 0.95, 0.9], minimum) == 'met'
  # The median meets it, the range does not: missed.
  assert report.verdict([0.88, 0.93, 0.95], minimum) == (
      'MISSED (spread crosses target)')
  assert report.verdict([0.8, 0.85, 0.89], minimum) == 'MISSED'
  assert report.verdict([float('nan')], minimum) is None
  assert report.verdict(None, minimum) is None
  # A cost target (at most) is judged on the range's max.
  maximum = report.at_most(0.10)
  assert report.verdict([-0.05, 0.02, 0.10], maximum) == 'met'
  assert report.verdict([0.02, 0.04, 0.12], maximum) == (
      'MISSED (spread crosses target)')
  assert report.verdict([0.11, 0.2], maximum) == 'MISSED'


def _results(rates, workloads=('mlp', 'host_call')):
  from bench import peers_report as report  # pylint: disable=g-import-not-at-top
  args = argparse.Namespace(repeats=3, quick=False, workloads=list(workloads),
                            memory_steps=50000)
  results = report.Results(args, sorted(rates))
  results.rates = dict(rates)
  return results


def _target(results, start):
  found = [t for t in results.targets() if t[0].startswith(start)]
  assert len(found) == 1, (start, results.targets())
  return found[0][1:]


def test_targets_use_each_repeats_ratio_and_its_range():
  # Repeat i against repeat i: 0.95, 0.88, 1.0 (the medians' ratio, 0.95,
  # would say met).
  results = _results({('mlp', 'hook100'): [95.0, 88.0, 120.0],
                      ('mlp', 'limit'): [100.0, 100.0, 120.0]})
  assert _target(results, 'mlp: hookestimator ipl 100 >= 0.9x') == (
      '0.950x (0.880x to 1.000x)', 'MISSED (spread crosses target)')
  results = _results({('mlp', 'hook100'): [95.0, 92.0, 120.0],
                      ('mlp', 'limit'): [100.0, 100.0, 120.0]})
  assert _target(results, 'mlp: hookestimator ipl 100 >= 0.9x') == (
      '0.950x (0.920x to 1.000x)', 'met')
  assert _target(results, 'gpt2-tiny:') == (None, None)  # not measured
  # The cost (at most 10%) is judged on its max: costs 5%, 12%, 2%.
  results = _results({('mlp', 'hook100'): [100.0, 100.0, 100.0],
                      ('host_call', 'hook100'): [95.0, 88.0, 98.0]})
  assert _target(results, 'host_call: cost <= 10%') == (
      '5.0% (2.0% to 12.0%)', 'MISSED (spread crosses target)')
  results.rates['host_call', 'hook100'] = [95.0, 91.0, 98.0]
  assert _target(results, 'host_call: cost <= 10%') == (
      '5.0% (2.0% to 9.0%)', 'met')
  table = results.targets_table()
  assert '| host_call: cost <= 10% | 5.0% (2.0% to 9.0%) | met |' in table
  assert ('| pipeline: hookestimator ipl 100 >= 0.9x the limit | not '
          'measured | - |') in table


def test_peers_bad_arguments():
  for argv in (['--repeats', '0'], ['--workloads', 'mlp,nope'],
               ['--memory-steps', '100']):
    result = subprocess.run(
        [sys.executable, '-m', 'bench.peers'] + argv, cwd=REPO_ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        universal_newlines=True, timeout=120)
    assert result.returncode == 2, argv
    assert 'error' in result.stderr


def _assert_child_refused(system, tmp_path):
  """A child for `system` exits at start-up: an error naming it."""
  from bench import peers  # pylint: disable=g-import-not-at-top
  child = peers.Child(system, str(tmp_path))
  try:
    with pytest.raises(peers.BenchError) as error:
      child.receive('start-up', 120)
  finally:
    child.close()
  assert "system '%s': exited" % system in str(error.value)
  assert 'usage: python -m bench.peer_systems' in str(error.value)


def test_child_that_dies_is_an_error_naming_it(tmp_path):
  _assert_child_refused('no-such-system', tmp_path)


@pytest.mark.skipif(HAS_ESTIMATOR, reason='this line has tf.estimator')
def test_no_estimator_child_without_tensorflow_estimator(tmp_path):
  from bench import peers  # pylint: disable=g-import-not-at-top
  assert all(system != 'estimator' for _, system in peers.measured_pairs(
      peers.WORKLOADS))
  _assert_child_refused('estimator', tmp_path)


def test_child_that_does_not_answer_in_time_is_killed(tmp_path):
  from bench import peers  # pylint: disable=g-import-not-at-top
  child = peers.Child('limit', str(tmp_path))
  try:
    with pytest.raises(peers.BenchError) as error:
      child.receive('start-up', 0.2)  # importing TensorFlow takes longer
    assert child.process.poll() is not None
  finally:
    child.close()
  assert "system 'limit': no answer to start-up within 0.2 s" in str(
      error.value)


def test_inference_rows_alone():
  """--workloads evaluate,predict measures their three systems (two
  without tensorflow-estimator) and nothing else."""
  from bench import peers  # pylint: disable=g-import-not-at-top
  args = peers.parse_args(['--workloads', 'evaluate,predict', '--quick'])
  assert args.workloads == ['evaluate', 'predict']
  systems = ['bare'] + (['estimator'] if HAS_ESTIMATOR else []) + ['hook100']
  assert peers.measured_pairs(args.workloads) == [
      (workload, system) for workload in ('evaluate', 'predict')
      for system in systems]


@pytest.mark.timeout(600)
def test_evaluate_and_predict_agree_on_one_checkpoint(tmp_path):
  """hookestimator, the bare loop and (where it exists) Estimator evaluate
  one checkpoint to the same accuracy and loss, and predict every example,
  one at a time."""
  from bench import inference_systems as inference  # pylint: disable=g-import-not-at-top
  model_dir = str(tmp_path)
  hook = inference.HookInference(model_dir)
  hook.prepare()
  runners = [hook, inference.BareInference(model_dir)]
  if HAS_ESTIMATOR:
    runners.append(inference.EstimatorInference(model_dir))
  results = [runner.evaluate() for runner in runners]
  for result in results[1:]:
    assert abs(result['accuracy'] - results[0]['accuracy']) <= 1e-6
    assert result['loss'] == pytest.approx(results[0]['loss'], rel=1e-5)
  # Trained one step from the seeded start: not a constant guess.
  assert 0.0 < results[0]['accuracy'] < 1.0
  for runner in runners:
    assert runner.predict() == inference.INFERENCE_EXAMPLES == 65573
  assert inference.INFERENCE_EXAMPLES % inference.INFERENCE_BATCH_SIZE


def test_replica_rows_alone():
  """--workloads replicas measures the replica systems and nothing else."""
  from bench import peers  # pylint: disable=g-import-not-at-top
  pairs = peers.measured_pairs(['replicas'])
  assert pairs == [('mlp', 'replicas'), ('gpt2-tiny', 'replicas')]
  assert peers.report_pairs(pairs) == [
      (workload, row) for workload in ('mlp', 'gpt2-tiny')
      for row in ('replicas1', 'replicas2', 'replicas2-nosum')]
