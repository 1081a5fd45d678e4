"""bench.soak's judgement of the samples taken between train() calls."""
from bench import soak


def _args(**changes):
  args = soak.parse_args(['--calls', '10', '--steps', '1000',
                          '--warmup-steps', '200'])
  for name, value in changes.items():
    setattr(args, name, value)
  return args


def _calls(rss, python_threads=1, os_threads=13):
  return [{'step': 100 * (i + 1), 'seconds': float(i), 'rss_mb': value,
           'os_threads': (os_threads(i) if callable(os_threads)
                          else os_threads),
           'python_threads': (python_threads(i) if callable(python_threads)
                              else python_threads)}
          for i, value in enumerate(rss)]


BEFORE = {'python_threads': 1}
# Up and down as the garbage collector frees earlier calls' graphs.
SAWTOOTH = [500, 506, 512, 501, 507, 513, 502, 508, 514, 503]


def test_memory_that_rises_and_falls_without_a_trend_is_flat(capsys):
  assert soak.report_calls(BEFORE, _calls(SAWTOOTH), _args())
  assert 'FLAT between calls' in capsys.readouterr().out


def test_memory_growing_call_after_call_is_not_flat(capsys):
  growing = [500 + 3 * i for i in range(10)]
  assert not soak.report_calls(BEFORE, _calls(growing),
                               _args(max_growth_mb=20.0))
  assert 'NOT FLAT between calls' in capsys.readouterr().out


def test_a_thread_left_after_a_call_is_not_flat():
  assert not soak.report_calls(
      BEFORE, _calls(SAWTOOTH, python_threads=lambda i: 1 + (i == 4)),
      _args())


def test_os_threads_piling_up_are_not_flat_but_one_leaving_is():
  assert not soak.report_calls(
      BEFORE, _calls(SAWTOOTH, os_threads=lambda i: 13 + i), _args())
  assert soak.report_calls(
      BEFORE, _calls(SAWTOOTH, os_threads=lambda i: 13 + i % 2), _args())
