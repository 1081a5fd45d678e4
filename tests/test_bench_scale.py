"""bench.scale: a tiny run of the MLP at 1 and 2 replicas, a tiny
loopback cluster of 1 and 2 worker processes (and one out of time), and
the tables and ratio arithmetic on rows made up here."""
import math
import os
import signal

import pytest

from bench import cluster as cluster_bench
from bench import scale
from tests.processes import listening


def test_a_tiny_run_times_every_phase_in_order(capsys):
  rows = scale.run(scale.parse_args(
      ['--models', 'mlp', '--replicas', '1', '2', '--loops', '2',
       '--no_workers']))
  assert [(r['model'], r['replicas']) for r in rows] == [('mlp', 1),
                                                         ('mlp', 2)]
  for row in rows:
    assert 0 < row['graph_built'] < row['session_created'] < row[
        'first_step'] < row['total'], row
    assert 0 < row['build_cpu'] <= row['session_cpu'] <= row[
        'first_step_cpu'], row
    assert row['steady_step'] > 0
  # Two replicas build more of the graph than one.
  assert rows[1]['nodes'] > rows[0]['nodes']
  out = capsys.readouterr().out
  assert scale.HEADER in out
  assert '| mlp | 2 | %d |' % rows[1]['nodes'] in out
  assert scale.LOOPBACK_HEADER not in out  # --no_workers


@pytest.mark.timeout(2 * scale.LOOPBACK_SECS // 3)
def test_loopback_workers_measure_the_chief_and_leave_no_process(capsys):
  rows = scale.run_loopback(scale.parse_args(
      ['--workers', '1', '2', '--loops', '2']))
  assert [(r['model'], r['workers'], r['replicas']) for r in rows] == [
      ('mlp', 1, 1), ('mlp', 2, 1)]
  for row in rows:
    for key in ('build_cpu', 'first_step', 'graph_built'):
      assert math.isfinite(row[key]) and row[key] > 0, (key, row)
    assert row['graph_built'] < row['first_step'], row
    assert len(row['ports']) == row['workers']
    # Every task's process group was killed: no server still listens.
    assert not any(listening(p) for p in row['ports']), row
  # Today the chief builds every worker's replica in its graph.
  assert rows[1]['nodes'] > rows[0]['nodes']
  out = capsys.readouterr().out
  assert scale.LOOPBACK_HEADER in out
  assert '| 2 | %d | %.2f | %.2f |' % (
      rows[1]['nodes'], rows[1]['build_cpu'], rows[1]['first_step']) in out
  assert 'W=2 / W=1: chief graph nodes' in out


def _group_gone(process):
  try:
    os.killpg(process.pid, 0)
  except OSError:
    return True
  return False


@pytest.mark.timeout(120)
def test_a_loopback_cluster_out_of_time_raises_and_its_groups_are_killed(
    monkeypatch):
  launched = []
  ports = []
  real_launch, real_free_ports = cluster_bench.launch, cluster_bench.free_ports

  def launch(*args, **kwargs):
    launched.append(real_launch(*args, **kwargs))
    return launched[-1]

  def free_ports(count):
    ports.extend(real_free_ports(count))
    return ports
  monkeypatch.setattr(cluster_bench, 'launch', launch)
  monkeypatch.setattr(cluster_bench, 'free_ports', free_ports)
  # 1 s: no task can have imported TensorFlow by then, on any machine.
  with pytest.raises(RuntimeError, match='timed out after 1 s'):
    scale.measure_loopback('mlp', 2, 2, timeout=1)
  assert len(launched) == 2 and len(ports) == 2
  assert all(_group_gone(p) for p in launched)
  assert all(p.returncode == -signal.SIGKILL for p in launched)
  assert not any(listening(p) for p in ports)


def _loopback_row(workers, nodes, build_cpu):
  return {'workers': workers, 'nodes': nodes, 'build_cpu': build_cpu,
          'first_step': 1.0}


def test_loopback_ratios_are_judged_at_four_workers_only():
  rows = [_loopback_row(1, 100, 1.0), _loopback_row(2, 110, 1.1),
          _loopback_row(4, 118, 1.3)]
  assert scale.loopback_table(rows)[2:] == [
      '| 1 | 100 | 1.00 | 1.00 |', '| 2 | 110 | 1.10 | 1.00 |',
      '| 4 | 118 | 1.30 | 1.00 |', '',
      'W=4 / W=1: chief graph nodes 1.18x, chief build CPU 1.30x (target '
      'at most 1.2x: missed)']
  rows[2]['build_cpu'] = 1.2
  assert scale.loopback_table(rows)[-1].endswith('(target at most 1.2x: '
                                                 'met)')
  assert scale.loopback_table(rows[:2])[-1].endswith('not judged)')
  # One worker count: no ratio line.
  assert len(scale.loopback_table(rows[:1])) == 3


def _row(tree, replicas, first_step, first_step_cpu):
  return {'model': 'gpt2', 'tree': tree, 'replicas': replicas, 'nodes': 1,
          'graph_built': 1.0, 'build_cpu': 1.0, 'session_created': 2.0,
          'session_cpu': 2.0, 'first_step': first_step,
          'first_step_cpu': first_step_cpu, 'steady_step': 0.1,
          'steady_step_cpu': 0.1}


def test_per_replica_startup_and_the_ratio_to_a_baseline():
  rows = [_row('baseline', 1, 5.0, 3.0), _row('this', 1, 5.0, 3.0),
          _row('baseline', 5, 13.0, 11.0), _row('this', 5, 9.0, 7.0)]
  # (13 - 5) / 4 = 2 s a replica before, (9 - 5) / 4 = 1 s after.
  assert scale.per_replica(rows[2], rows[::2], 'first_step') == 2.0
  assert scale.per_replica(rows[0], rows[::2], 'first_step') is None
  lines = scale.ratio_lines(rows)
  assert lines[-1] == ('| gpt2 | 5 | 2.000 (2.000) | 1.000 (1.000) | '
                       '0.50x | 0.50x |')
  table = scale.table(rows[1::2])
  assert table[-1].startswith('| gpt2 | 5 | 1 | 1.00 (1.00) | 2.00 (2.00) | '
                              '9.00 (7.00) | 1.000 (1.000) | 100.0 (100.0) |')


def test_fewer_than_two_loops_are_refused():
  with pytest.raises(SystemExit):
    scale.parse_args(['--loops', '1'])
