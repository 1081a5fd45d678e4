"""A few runs of the signal stress bench (bench/signal_stress.py), side by
side so that they load each other's cores: each child gets SIGINT or
SIGTERM at a random moment after its import, and must end within the
deadline with a documented exit code and consistent checkpoints.

A smoke check: the race it stands for (a signal handler blocking on a lock
the main thread held) is caught every time by
tests/test_signals.py::test_a_signal_while_the_stop_is_read_does_not_block.
Kept under a minute on two cores: four children at once, no resume check.
"""
import argparse
import random
import signal
import threading
import time

import pytest

from bench import signal_stress

# The training modes, where hookestimator handles the signals from the
# start of the build, on both feeding paths, in four runs. (Evaluation and
# prediction leave signals as Python has them: there TensorFlow may turn a
# KeyboardInterrupt into another error while it traces a dataset function,
# which the bench reports and this check leaves out.)
RUNS = [('train', 'in_loop', signal.SIGINT),
        ('train', 'infeed_thread', signal.SIGTERM),
        ('train_and_evaluate', 'in_loop', signal.SIGTERM),
        ('train_and_evaluate', 'infeed_thread', signal.SIGINT),
        ]
# From the child's `ready` (imported) through its graph building, session
# and training; a child that ends first counts as finishing first.
WINDOW_SECS = 6.0


@pytest.mark.timeout(150)
def test_signals_at_random_moments_end_every_run_cleanly(tmp_path):
  seed = random.randrange(10 ** 6)
  rng = random.Random(seed)
  args = argparse.Namespace(max_steps=40, resume_steps=0, deadline=30)
  records = [None] * len(RUNS)

  def run(index, mode, feeding, signal_number, delay):
    records[index] = signal_stress.run_one(index, mode, feeding,
                                           signal_number, delay,
                                           str(tmp_path), args)
  threads = [threading.Thread(
      target=run, args=(i, mode, feeding, number,
                        rng.uniform(0, WINDOW_SECS)),
      name='StressRun%d' % i) for i, (mode, feeding, number) in
             enumerate(RUNS)]
  start = time.monotonic()
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join(140)
  assert not any(thread.is_alive() for thread in threads)
  bad = [r for r in records if r.get('hang') or r['bad_exit'] or
         r.get('checkpoint_problems')]
  assert bad == [], 'seed %d, %.1f s: %s' % (seed, time.monotonic() - start,
                                             bad)
