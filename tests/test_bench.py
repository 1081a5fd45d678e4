"""The benchmarks run: bench.peers --quick end to end (children, tables,
targets, files). Speeds are never asserted."""
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
# A smoke run of ~2 minutes on a 2-core machine; slack for a loaded one.
TIMEOUT = 420


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
  expected = [limit] + estimator
  if IS_TF2:
    expected += [('Keras Model.fit', '1'), ('Keras Model.fit', '100')]
  expected += [('hookestimator', ipl) for ipl in ('1', '10', '100', '1000')]
  assert mlp == expected
  # Every ratio column is a peer this line has, and every cell is filled.
  header = _header(out, 'mlp')
  peers = ['ratio to the limit'] + (
      ['ratio to tf.estimator.Estimator'] if HAS_ESTIMATOR else []) + (
          ['ratio to Keras spe 1', 'ratio to Keras spe 100'] if IS_TF2
          else [])
  assert header[4:] == peers
  for row in _rows(out, 'mlp'):
    assert len(row) == len(header) and all(row), row
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
  assert [row[0] for row in _rows(out, 'memory')] == [
      'RSS (VmRSS), MB', 'OS threads', 'Python threads (active_count)']
  targets = [row[0] for row in _rows(out, 'targets')]
  expected_targets = [
      'mlp: hookestimator ipl 100 >= 0.90x the limit']
  if IS_TF2:
    expected_targets.append('mlp: hookestimator ipl 100 >= 1.0x Keras '
                            'spe 100')
  if HAS_ESTIMATOR:
    expected_targets += [
        'mlp: hookestimator ipl 100 >= 3x tf.estimator.Estimator',
        'mlp: hookestimator ipl 1 >= 0.9x tf.estimator.Estimator']
  expected_targets.append('pipeline: hookestimator ipl 100 >= 0.90x the '
                          'limit (the same pipeline in a bare while_loop)')
  if IS_TF2:
    expected_targets.append('pipeline: hookestimator ipl 100 >= 1.0x Keras '
                            'spe 100')
  expected_targets += [
      'gpt2-tiny: hookestimator ipl 100 >= 0.97x the limit',
      'replicas: mlp N=2 examples/sec >= 0.9x N=1 at the same global batch',
      'replicas: gpt2-tiny N=2 examples/sec >= 0.9x N=1 at the same global '
      'batch',
      'host_call: cost <= 10%',
      'input-bound: hookestimator ipl 100 >= 0.85x min(input alone, '
      'compute alone)',
      'memory: RSS growth < 5%',
      'memory: OS thread growth < 5%']
  assert targets == expected_targets
  for row in _rows(out, 'targets'):
    assert row[2] in ('met', 'MISSED', '-')

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


def test_replica_rows_alone():
  """--workloads replicas measures the replica systems and nothing else."""
  from bench import peers  # pylint: disable=g-import-not-at-top
  pairs = peers.measured_pairs(['replicas'])
  assert pairs == [('mlp', 'replicas'), ('gpt2-tiny', 'replicas')]
  assert peers.report_pairs(pairs) == [
      (workload, row) for workload in ('mlp', 'gpt2-tiny')
      for row in ('replicas1', 'replicas2', 'replicas2-nosum')]
