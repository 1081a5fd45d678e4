"""Signal stress: SIGINT or SIGTERM at random moments, on loaded cores.

Run from the repository root (not part of the test suite; its fast
version is tests/faults/test_signal_stress.py):

    python -m bench.signal_stress --runs 40 --load 1
    python -m bench.signal_stress --runs 1000 --load 2 --out /tmp/stress

Each run starts the fault suite's child program (tests/faults/child.py
`stress`) in a process group of its own: one short train, evaluate,
predict or train_and_evaluate of the integer-id model, on one of the two
feeding paths (the device loop reading its input itself, or the infeed
thread), cycling through all eight. Once the child reports that it has
imported everything, the run waits a random time, from none to a little
over the longest run of that kind seen so far, and sends SIGINT or SIGTERM.
(The first run of each kind is not signalled: it measures how long such
a run lasts on this machine under this load.)
Meanwhile `--load` busy-loop processes keep the cores loaded.

A run is judged on:
- the deadline: the child must end within --deadline seconds of the
  signal. A child that does not is a hang: SIGUSR1 makes it dump every
  thread's stack (faulthandler) into its stderr, which is saved as
  hang-N.txt in --out, and then its process group is killed;
- its exit code, one of those docs/faults.md documents: 0 (it finished
  first), 128 + the signal (train() stopped and checkpointed), or the
  signal's own action outside train() (-signal; for SIGINT a
  KeyboardInterrupt, exit code 1 before Python 3.8);
- its checkpoints (training modes): each listed one loads; the latest has
  the step train() reported; the ids every step read, recorded in the
  model, are those of one uninterrupted run; and, with --resume-steps, a
  run resumed from it reads on exactly where that step left off (the
  input position saved with the checkpoint agrees with its global step).

Every run is one line of runs.jsonl in --out; the summary counts runs,
hangs, bad exit codes and inconsistent checkpoints, per mode and feeding.
The exit status is 1 if any run hung, exited badly or left an
inconsistent checkpoint.
"""
from __future__ import absolute_import, division, print_function

import argparse
import collections
import json
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from hookestimator.config import FEEDING_PATHS  # noqa: E402
from tests.faults import child as child_lib  # noqa: E402

v1 = tf.compat.v1
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIGNALS = (signal.SIGINT, signal.SIGTERM)
KINDS = [(mode, feeding) for mode in child_lib.STRESS_MODES
         for feeding in FEEDING_PATHS]
TRAINING_MODES = ('train', 'train_and_evaluate')
# Before the child reports `ready` (importing TensorFlow on a loaded
# machine) and, with no signal sent, for a whole run.
START_TIMEOUT_SECS = 300
DUMP_WAIT_SECS = 5


class Child(object):
  """A child in its own process group; its events are read as they come
  and its stderr goes to a file."""

  def __init__(self, args, stderr_path):
    self._stderr_file = open(stderr_path, 'w')
    self.stderr_path = stderr_path
    self.process = subprocess.Popen(
        [sys.executable, '-m', 'tests.faults.child'] + [str(a) for a in args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=self._stderr_file,
        universal_newlines=True, start_new_session=True)
    self.events = queue.Queue()
    self._reader = threading.Thread(target=self._read, name='ChildEvents')
    self._reader.daemon = True
    self._reader.start()

  def _read(self):
    for line in self.process.stdout:
      if line.startswith('EVENT '):
        self.events.put(json.loads(line[len('EVENT '):]))
    self.events.put(None)

  def wait_for(self, name, timeout):
    """The event `name`; None if the child ended or `timeout` passed."""
    deadline = time.monotonic() + timeout
    while True:
      try:
        event = self.events.get(
            timeout=max(deadline - time.monotonic(), 0.001))
      except queue.Empty:
        return None
      if event is None or event['event'] == name:
        return event

  def wait(self, timeout):
    """The exit code, or None if the child is still running."""
    try:
      return self.process.wait(timeout)
    except subprocess.TimeoutExpired:
      return None

  def signal(self, number):
    if self.process.poll() is None:
      try:
        self.process.send_signal(number)
      except ProcessLookupError:
        pass

  def remaining_events(self):
    self._reader.join(10)
    events = []
    while not self.events.empty():
      event = self.events.get()
      if event is not None:
        events.append(event)
    return events

  def stderr(self):
    if not self._stderr_file.closed:
      self._stderr_file.flush()
    with open(self.stderr_path) as f:
      return f.read()

  def kill_group(self):
    try:
      os.killpg(self.process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
      pass
    self.process.wait()
    self._stderr_file.close()


def documented_exit(code, signal_number, stderr):
  """Whether `code` is one docs/faults.md gives for a run sent
  `signal_number` (None: no signal was sent)."""
  if code == 0:
    return True
  if signal_number is None:
    return False
  if code in (128 + signal_number, -signal_number):
    return True
  # Before Python 3.8 an uncaught KeyboardInterrupt exits with 1.
  return (signal_number == signal.SIGINT and code == 1 and
          sys.version_info < (3, 8) and 'KeyboardInterrupt' in stderr)


def checkpoint_problems(model_dir, max_steps, code, stop_event):
  """What is wrong with model_dir's checkpoints after a training run;
  returns (problems, the latest checkpoint's step or None)."""
  try:
    listed = child_lib.listed_checkpoints(model_dir)
  except (tf.errors.OpError, ValueError) as error:
    return ['a checkpoint does not load: %s' % error], None
  problems = ['%s holds step %d' % (prefix, step) for prefix, step in listed
              if not prefix.endswith('-%d' % step)]
  latest = v1.train.latest_checkpoint(model_dir)
  if latest is None:
    if stop_event is not None and stop_event['checkpoint'] is not None:
      problems.append('train() reported %s, but there is no checkpoint' %
                      stop_event['checkpoint'])
    if code == 0:
      problems.append('finished without a checkpoint')
    return problems, None
  step = int(v1.train.load_variable(latest, 'global_step'))
  if stop_event is not None and stop_event['step'] != step:
    problems.append('train() reported step %s, the latest checkpoint '
                    'holds %d' % (stop_event['step'], step))
  if code == 0 and step != max_steps:
    problems.append('finished at step %d, not %d' % (step, max_steps))
  problems += ids_problems(latest, step)
  return problems, step


def ids_problems(checkpoint, step):
  """Whether the ids the checkpoint's steps read are an uninterrupted
  run's."""
  recorded = min(step, child_lib.RECORDED_STEPS - 1)
  ids = v1.train.load_variable(checkpoint, 'ids_by_step')[:recorded]
  expected = child_lib.expected_ids(recorded)
  wrong = np.flatnonzero((ids != expected).any(axis=1))
  if len(wrong):
    return ['steps %s read other ids than an uninterrupted run' %
            wrong[:10].tolist()]
  return []


def resume_problems(model_dir, feeding, step, resume_steps, deadline,
                    log_path):
  """Resumes from the checkpoint at `step` for `resume_steps` more steps,
  on the same feeding path (whose input pipeline the saved position is
  of): the steps after it must read on where it left off."""
  target = step + resume_steps
  child = Child(['train', model_dir, '--max-steps', target,
                 '--feeding', feeding], log_path)
  try:
    code = child.wait(START_TIMEOUT_SECS + deadline)
  finally:
    child.kill_group()
  if code != 0:
    return ['the resumed run exited with %s' % code]
  return ids_problems(v1.train.latest_checkpoint(model_dir), target)


def run_one(index, mode, feeding, signal_number, delay, out_dir, args):
  """One child, signalled `delay` seconds after it is ready (None: never);
  returns the record of the run."""
  model_dir = os.path.join(out_dir, 'model-%d' % index)
  stderr_path = os.path.join(out_dir, 'stderr-%d.txt' % index)
  child = Child(['stress', model_dir, '--mode', mode, '--feeding', feeding,
                 '--max-steps', args.max_steps, '--iterations-per-loop', 2,
                 '--save-steps', 10], stderr_path)
  record = dict(run=index, mode=mode, feeding=feeding, delay=delay,
                signal=None if signal_number is None else
                signal.Signals(signal_number).name, signalled=False)
  try:
    ready = child.wait_for('ready', START_TIMEOUT_SECS)
    ready_at = time.monotonic()
    code = None
    if ready is not None and signal_number is not None:
      code = child.wait(delay)
      record['signalled'] = code is None
      child.signal(signal_number)
    if code is None:
      code = child.wait(args.deadline if ready is not None and
                        signal_number is not None else START_TIMEOUT_SECS)
    record['seconds'] = time.monotonic() - ready_at
    if code is None:
      record['hang'] = True
      child.signal(signal.SIGUSR1)
      time.sleep(DUMP_WAIT_SECS)
      hang_path = os.path.join(out_dir, 'hang-%d.txt' % index)
      with open(hang_path, 'w') as f:
        f.write(json.dumps(record) + '\n' + child.stderr())
      record['dump'] = hang_path
      return record
  finally:
    child.kill_group()
  record['code'] = code
  events = child.remaining_events()
  stderr = child.stderr()
  record['bad_exit'] = not documented_exit(code, signal_number, stderr)
  if record['bad_exit']:
    record['stderr_tail'] = stderr[-2000:]
  if mode in TRAINING_MODES:
    stops = [e for e in events if e['event'] == 'interrupted']
    if code == 128 + (signal_number or 0) and not stops:
      problems, step = ['exit code %d without train() stopping' % code], None
    else:
      problems, step = checkpoint_problems(model_dir, args.max_steps, code,
                                           stops[0] if stops else None)
    if not problems and step is not None and args.resume_steps:
      problems += resume_problems(
          model_dir, feeding, step, args.resume_steps, args.deadline,
          os.path.join(out_dir, 'resume-%d.txt' % index))
    record['step'] = step
    record['checkpoint_problems'] = problems
  if not (record['bad_exit'] or record.get('checkpoint_problems')):
    shutil.rmtree(model_dir, ignore_errors=True)
    os.remove(stderr_path)
  return record


def outcome(record):
  if record.get('hang'):
    return 'hang'
  if record['bad_exit']:
    return 'bad_exit'
  if record['signal'] is None:
    return 'unsignalled'
  if record.get('checkpoint_problems'):
    return 'inconsistent'
  code = record['code']
  if code == 0:
    return 'finished'
  if code > 128:
    return 'stopped'
  return 'default_action'


def start_load(count):
  """`count` busy-loop processes, each in its own process group."""
  return [subprocess.Popen([sys.executable, '-c', 'while True: pass'],
                           start_new_session=True) for _ in range(count)]


def stop_load(processes):
  for process in processes:
    try:
      os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
      pass
    process.wait()


def run(args, report=print):
  """Runs args.runs stressed runs; returns their records."""
  rng = random.Random(args.seed)
  out_dir = args.out or tempfile.mkdtemp(prefix='signal_stress_')
  if not os.path.isdir(out_dir):
    os.makedirs(out_dir)
  # The longest ready-to-exit time seen per kind, from runs that ended
  # before their signal: signals land from just after the import to just
  # before the exit.
  longest = {}
  records = []
  with open(os.path.join(out_dir, 'args.json'), 'w') as f:
    json.dump(dict(vars(args), tensorflow=tf.__version__,
                   python='.'.join(map(str, sys.version_info[:3]))), f)
  load = start_load(args.load)
  try:
    with open(os.path.join(out_dir, 'runs.jsonl'), 'a') as log_file:
      for index in range(args.runs):
        mode, feeding = KINDS[index % len(KINDS)]
        signal_number = rng.choice(SIGNALS)
        delay = rng.uniform(
            0, 1.1 * longest.get((mode, feeding), args.first_window))
        if args.calibrate and (mode, feeding) not in longest:
          # The first run of a kind is not signalled: it measures the
          # window the later ones' signals are spread over.
          signal_number = delay = None
        record = run_one(index, mode, feeding, signal_number, delay, out_dir,
                         args)
        if record.get('code') == 0 and not record['signalled']:
          longest[mode, feeding] = max(longest.get((mode, feeding), 0),
                                       record['seconds'])
        record['outcome'] = outcome(record)
        records.append(record)
        log_file.write(json.dumps(record) + '\n')
        log_file.flush()
        if args.verbose or record['outcome'] in ('hang', 'bad_exit',
                                                 'inconsistent'):
          report('run %d %s/%s %s after %s s: %s %s' % (
              index, mode, feeding, record['signal'],
              '-' if delay is None else '%.2f' % delay,
              record['outcome'], record.get('dump') or
              record.get('checkpoint_problems') or record.get('code')))
  except SystemExit:
    report('Stopped after %d runs.' % len(records))
    raise
  finally:
    stop_load(load)
    report(summary(records, args, out_dir))
  return records


def summary_of(out_dir):
  """The summary of the runs recorded in out_dir (of a bench that may
  have been stopped)."""
  with open(os.path.join(out_dir, 'args.json')) as f:
    args = argparse.Namespace(**json.load(f))
  with open(os.path.join(out_dir, 'runs.jsonl')) as f:
    records = [json.loads(line) for line in f if line.strip()]
  return summary(records, args, out_dir)


def summary(records, args, out_dir):
  counts = collections.Counter(r['outcome'] for r in records)
  lines = [
      'Signal stress: TensorFlow %s, Python %s, %d runs, load %d, '
      'trainings of %d steps, deadline %d s, resume check %s; logs in %s' % (
          getattr(args, 'tensorflow', tf.__version__),
          getattr(args, 'python', '.'.join(map(str, sys.version_info[:3]))),
          len(records), args.load, args.max_steps, args.deadline,
          ('%d steps' % args.resume_steps) if args.resume_steps else 'off',
          out_dir),
      'hangs %d, bad exit codes %d, inconsistent checkpoints %d' % (
          counts['hang'], counts['bad_exit'], counts['inconsistent']),
      '%-20s %-14s %5s %6s %9s %8s %8s %5s %8s %12s' % (
          'mode', 'feeding', 'runs', 'unsig', 'finished', 'stopped',
          'default', 'hangs', 'bad exit', 'inconsistent')]
  for mode, feeding in KINDS:
    kind = collections.Counter(r['outcome'] for r in records
                               if (r['mode'], r['feeding']) == (mode, feeding))
    lines.append('%-20s %-14s %5d %6d %9d %8d %8d %5d %8d %12d' % (
        mode, feeding, sum(kind.values()), kind['unsignalled'],
        kind['finished'], kind['stopped'],
        kind['default_action'], kind['hang'], kind['bad_exit'],
        kind['inconsistent']))
  lines.append('unsig: the first run of a kind, not signalled (it measures '
               'the window); finished: ended before the signal (0); '
               'stopped: train() '
               'stopped and checkpointed (128 + signal); default: the '
               "signal's own action outside train()")
  return '\n'.join(lines)


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--runs', type=int, default=40)
  parser.add_argument('--load', type=int, default=1,
                      help='busy-loop processes beside the runs')
  parser.add_argument('--deadline', type=float, default=60,
                      help='seconds from the signal to the exit')
  parser.add_argument('--max-steps', type=int, default=200,
                      help='steps of a training run (more put more of the '
                      'signals inside train())')
  parser.add_argument('--resume-steps', type=int, default=10,
                      help='steps a resumed run trains after a training '
                      'run (0: no resume check)')
  parser.add_argument('--first-window', type=float, default=8.0,
                      help='seconds after ready a signal may land until a '
                      'run of that kind has been seen to end')
  parser.add_argument('--no-calibrate', dest='calibrate',
                      action='store_false',
                      help='signal the first run of each kind too (its '
                      'window is then --first-window)')
  parser.add_argument('--seed', type=int, default=None)
  parser.add_argument('--out', default=None, help='directory for the logs')
  parser.add_argument('--verbose', action='store_true')
  parser.add_argument('--summary-of', default=None, metavar='DIR',
                      help="print the summary of DIR's runs and exit")
  args = parser.parse_args(argv)
  if args.summary_of:
    return args
  for name in ('runs', 'deadline', 'max_steps'):
    if getattr(args, name) <= 0:
      parser.error('--%s must be positive' % name.replace('_', '-'))
  for name in ('load', 'resume_steps'):
    if getattr(args, name) < 0:
      parser.error('--%s must not be negative' % name.replace('_', '-'))
  if args.max_steps + args.resume_steps >= child_lib.RECORDED_STEPS:
    parser.error('--max-steps + --resume-steps must be under %d' %
                 child_lib.RECORDED_STEPS)
  return args


def main(argv=None):
  args = parse_args(argv)
  if args.summary_of:
    print(summary_of(args.summary_of))
    return 0
  # SIGTERM ends the bench through its cleanup (its children and load
  # processes killed) and prints the summary of the runs so far.
  signal.signal(signal.SIGTERM, lambda *unused: sys.exit(128 + signal.SIGTERM))
  records = run(args)
  bad = [r for r in records
         if r['outcome'] in ('hang', 'bad_exit', 'inconsistent')]
  return 1 if bad else 0


if __name__ == '__main__':
  sys.exit(main())
