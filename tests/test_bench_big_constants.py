"""bench.big_constants, tiny: every system of this line runs a 1 MiB array
in a process of its own and reports finite figures; hookestimator's event
file stays under 10% of the array (5% is
tests/test_event_writer.py's, at 4 MiB). Speeds are never asserted."""
import math

from bench import big_constants


def test_tiny_run_reports_every_system(tmp_path, capsys):
  assert big_constants.main(['--mb', '1', '--steps', '3']) == 0
  out = capsys.readouterr().out
  rows = [line for line in out.splitlines()
          if line.startswith('| 1 |')]
  assert [r.split('|')[2].strip() for r in rows] == big_constants.systems()


def test_measure_gives_finite_figures_and_a_small_event_file(tmp_path):
  row = big_constants.measure('hookestimator', 1, 3, str(tmp_path))
  for key in ('events_mb', 'other_mb', 'peak_rss_mb', 'cpu_seconds',
              'train_seconds', 'process_seconds'):
    assert math.isfinite(row[key]) and row[key] >= 0, (key, row)
  # The graph's structure alone is some 70 kB: at 1 MiB, under 10%.
  assert 0 < row['events_mb'] < 0.10 * (1 << 20) / 1e6
  assert row['peak_rss_mb'] > 50 and row['cpu_seconds'] > 0
  assert row['train_seconds'] < row['process_seconds']
  # The child's model_dir is removed once measured.
  assert list(tmp_path.iterdir()) == []
