"""bench.feeders --quick end to end: every row of its table printed with
finite figures, every process it started gone. Speeds are never
asserted."""
import math

import pytest

from bench import feeders
from tests.processes import Processes

# A smoke run of under a minute on a 2-core machine; slack for a loaded one.
TIMEOUT = 240


def _run_quick(tmp_path):
  with Processes(tmp_path) as processes:
    bench = processes.start_command('bench', ['-m', 'bench.feeders',
                                              '--quick'])
    code, _, out = processes.wait(bench, TIMEOUT)
  assert code == 0, out[-3000:]
  return out


def _number(cell):
  return float(cell.rstrip('x'))


@pytest.mark.timeout(TIMEOUT + 60)
def test_quick_run_prints_every_row_with_finite_figures(tmp_path):
  out = _run_quick(tmp_path)
  rows = {}
  for line in out.splitlines():
    cells = [c.strip() for c in line.strip('|').split('|')]
    if line.startswith('|') and cells[0] in [r[2] for r in feeders.ROWS]:
      rows[cells[0]] = cells
  expected = [r[2] for r in feeders.ROWS
              if r[0] != 'service' or feeders._has_data_service()]  # pylint: disable=protected-access
  assert sorted(rows) == sorted(expected), out
  for label, cells in rows.items():
    # steps/s, its ratio, trainer CPU, its ratio: numbers everywhere.
    for cell in cells[1:5]:
      assert math.isfinite(_number(cell)) and _number(cell) > 0, (label,
                                                                  cells)
    # Input processes' CPU: none without them, a number with them.
    if label.startswith('none'):
      assert cells[5] == '-', cells
    else:
      assert math.isfinite(_number(cells[5])), cells
    assert math.isfinite(_number(cells[6])), cells
  assert 'Trainer CPU per step falls as the input moves out of it:' in out
  if not feeders._has_data_service():  # pylint: disable=protected-access
    assert 'has no tf.data service' in out
