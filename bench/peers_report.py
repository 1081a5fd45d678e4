"""bench.peers results: the tables, the targets, the markdown and the figure."""
from __future__ import absolute_import, division, print_function

import functools
import os

import tensorflow as tf

from bench.common import HAS_ESTIMATOR, fmt, median, no_estimator_note
from bench.inference_systems import (INFERENCE_BATCH_SIZE,
                                     INFERENCE_EXAMPLES, INFERENCE_LOOP,
                                     INFERENCE_WORKLOADS)
from bench.peer_systems import (GPT2_BATCH_SIZE, INPUT_ROUNDS,
                                 REPLICA_SYSTEMS, SYSTEMS)

BATCH_SIZES = {'mlp': 64, 'pipeline': 64, 'host_call': 64,
               'input-bound': 64, 'gpt2-tiny': GPT2_BATCH_SIZE,
               'evaluate': INFERENCE_BATCH_SIZE,
               'predict': INFERENCE_BATCH_SIZE}
# The workloads with a throughput table and a panel in the chart.
THROUGHPUT_WORKLOADS = ('mlp', 'pipeline', 'gpt2-tiny')
HOOK_LOOPS = ('hook1', 'hook10', 'hook100', 'hook1000')
# The ratio columns: only the peers this TensorFlow line has.
PEERS = tuple((system, name) for system, name in (
    ('limit', 'ratio to the limit'),
    ('bare1', 'ratio to the bare loop, 1 step per session.run'),
    ('estimator', 'ratio to tf.estimator.Estimator'),
    ('keras1', 'ratio to Keras spe 1'),
    ('keras100', 'ratio to Keras spe 100')) if system in SYSTEMS)
HAS_KERAS = 'keras100' in SYSTEMS
# The ratio columns of the evaluate and predict tables.
INFERENCE_PEERS = tuple((system, name) for system, name in (
    ('estimator', 'ratio to tf.estimator.Estimator'),
    ('bare', 'ratio to the bare loop')) if system in SYSTEMS)
# The peer of each 'hookestimator >= x peer' target that has no
# tf.estimator.Estimator peer on a line without tensorflow-estimator.
FALLBACK_PEERS = {'mlp': 'bare1', 'evaluate': 'bare', 'predict': 'bare'}
NOTES = {
    'gpt2-tiny': 'No Keras rows: the model is built from '
                 'tf.compat.v1.get_variable and plain ops, not Keras layers.',
    'pipeline': 'The mlp on the input pipeline users write: '
                'from_tensor_slices over the 4096 single examples, repeat, '
                'batch(64, drop_remainder=True), prefetch(AUTOTUNE). Every '
                'system reads it; the limit reads it inside its bare '
                'while_loop, one get_next per step.',
    'evaluate': 'The bare loop, per call: builds one graph, starts a '
                'session, restores the checkpoint, runs one session.run of '
                'a while_loop reading every batch from the dataset\'s '
                'iterator and updating the same tf.compat.v1.metrics '
                '(accuracy, mean loss), and reads their values.',
    'predict': 'The bare loop, per call: builds one graph, starts a '
               'session, restores the checkpoint, runs one session.run per '
               'batch fetching the logits and iterates their rows in '
               'Python, each as {\'logits\': row}; the others\' predict() '
               'generators are read to their end, one example at a time.',
}


def label(system):
  """A system's label, or a replica row's."""
  if system in REPLICA_SYSTEMS:
    return REPLICA_SYSTEMS[system][2]
  return SYSTEMS[system][0]


def loop_size(system):
  return SYSTEMS['replicas' if system in REPLICA_SYSTEMS else system][1]


def row_name(system):
  size = loop_size(system)
  if system in REPLICA_SYSTEMS:  # 'hookestimator ipl 100, 2 replicas'
    return 'hookestimator ipl %s, %s' % (size,
                                         label(system).split(', ', 1)[1])
  if system.startswith('keras'):
    return '%s spe %s' % (label(system), size)
  if system.startswith('hook'):
    return '%s ipl %s' % (label(system), size)
  return label(system)


def ratio(numerator, denominator):
  """numerator / denominator; None if either is None, NaN if undefined."""
  if numerator is None or denominator is None:
    return None
  return numerator / denominator if denominator else float('nan')


def numbers(values):
  """The values that are numbers (not None, not NaN)."""
  return [v for v in values or () if v is not None and v == v]


def spread(values):
  """(median, min, max) of the values that are numbers; None if none is."""
  values = numbers(values)
  if not values:
    return None
  return median(values), min(values), max(values)


def spread_text(values, pattern, scale=1.0):
  """'median (min to max)' of the values, each `pattern % (v * scale)`;
  the median alone for one value; 'n/a' for none."""
  found = spread(values)
  if found is None:
    return 'n/a'
  middle, low, high = [pattern % (v * scale) for v in found]
  if len(numbers(values)) == 1:
    return middle
  return '%s (%s to %s)' % (middle, low, high)


def at_least(minimum):
  return lambda value: value >= minimum


def at_most(maximum):
  return lambda value: value <= maximum


def below(limit):
  return lambda value: value < limit


MET = 'met'
MISSED = 'MISSED'
STRADDLES = 'MISSED (spread crosses target)'


def verdict(values, passes):
  """Whether a target is met by every repeat's value: MET if all pass (for
  a minimum, the range's min meets it; for a maximum, its max), STRADDLES
  if some do and some do not, MISSED if none does; None where nothing was
  measured."""
  values = numbers(values)
  if not values:
    return None
  passed = [bool(passes(v)) for v in values]
  if all(passed):
    return MET
  return STRADDLES if any(passed) else MISSED


def ratios(numerators, denominators):
  """Repeat i of one against repeat i of the other (round-robin: measured
  close in time); None if either is missing."""
  if not numerators or not denominators:
    return None
  return [ratio(a, b) for a, b in zip(numerators, denominators)]


def table(header, rows, text_columns=1):
  """A markdown table; the first `text_columns` columns left-aligned."""
  aligns = ['---'] * text_columns + ['---:'] * (len(header) - text_columns)
  lines = ['| %s |' % ' | '.join(header), '|%s|' % '|'.join(aligns)]
  return lines + ['| %s |' % ' | '.join(row) for row in rows]


class Results(object):
  """Every measured rate, the warm-up times and the memory samples."""

  def __init__(self, args, pairs):
    self.args = args
    self.pairs = pairs
    self.rates = {}
    self.warmup_seconds = {}
    self.memory = None
    self.warnings = []
    self.parameters = {}
    # evaluate and predict: seconds per call and each call's answer.
    self.seconds = {}
    self.answers = {}

  def add(self, workload, system, answer):
    rate = answer['rate']
    if answer.get('parameters'):
      self.parameters[workload] = answer['parameters']
    self.rates.setdefault((workload, system), []).append(
        float('nan') if rate is None else rate)
    if workload in INFERENCE_WORKLOADS:
      self.seconds.setdefault((workload, system), []).append(
          answer['seconds'])
      self.answers[workload, system] = answer
      if answer.get('examples', INFERENCE_EXAMPLES) != INFERENCE_EXAMPLES:
        self.warnings.append(
            'WARNING: %s on %s read %d examples, expected %d' % (
                row_name(system), workload, answer['examples'],
                INFERENCE_EXAMPLES))
      return
    if answer['global_step'] != answer['trained']:
      self.warnings.append(
          'WARNING: %s on %s ended at global step %d, expected %d' % (
              row_name(system), workload, answer['global_step'],
              answer['trained']))

  def rate(self, workload, system):
    """The median steps/sec, or None where not measured."""
    if (workload, system) not in self.rates:
      return None
    return median(self.rates[workload, system])

  def ratios(self, workload, system, peer, peer_workload=None):
    """Each repeat's rate of `system` over its peer's in that repeat."""
    return ratios(self.rates.get((workload, system)),
                  self.rates.get((peer_workload or workload, peer)))

  def ratio_text(self, workload, system, peer, pattern='%.2fx'):
    """The median ratio over repeats and its range; '-' if the peer was
    not measured on `workload`."""
    if (workload, peer) not in self.rates:
      return '-'
    return spread_text(self.ratios(workload, system, peer), pattern)

  def peers(self, workload):
    """The ratio columns of a throughput table: PEERS, bare1's only where
    it was measured."""
    return [(peer, name) for peer, name in PEERS
            if peer != 'bare1' or (workload, peer) in self.rates]

  def systems(self, workload):
    """The workload's systems in its own table (the replica systems have
    theirs)."""
    return [s for w, s in self.pairs
            if w == workload and s not in REPLICA_SYSTEMS]

  def replica_workloads(self):
    workloads = []
    for workload, system in self.pairs:
      if system in REPLICA_SYSTEMS and workload not in workloads:
        workloads.append(workload)
    return workloads

  # ---------------------------------------------------------------- tables
  def throughput_table(self, workload):
    peers = self.peers(workload)
    header = ['system', 'iterations_per_loop (Keras: steps_per_execution)',
              'steps/sec', 'examples/sec'] + [name for _, name in peers]
    rows = []
    for system in self.systems(workload):
      rate = self.rate(workload, system)
      row = [label(system), loop_size(system), fmt(rate, '%.1f'),
             fmt(rate * BATCH_SIZES[workload], '%.0f')]
      for peer, _ in peers:
        row.append(self.ratio_text(workload, system, peer))
      rows.append(row)
    lines = ['### %s' % workload, ''] + table(header, rows)
    if workload in NOTES:
      lines += ['', 'Note: ' + NOTES[workload]]
    if not HAS_KERAS and workload == 'mlp':
      lines += ['', 'Note: no Keras rows on TensorFlow 1.x.']
    return lines + ['']

  def host_call_costs(self):
    """Each repeat's 1 - rate with host_call / rate without; None if not
    measured."""
    kept = self.ratios('host_call', 'hook100', 'hook100', 'mlp')
    return None if kept is None else [1.0 - k for k in kept]

  def host_call_table(self):
    rows = []
    for workload, what in (('mlp', 'no host_call (the mlp row)'),
                           ('host_call', 'host_call of 3 scalars every '
                            'step')):
      rate = self.rate(workload, 'hook100')
      rows.append(['hookestimator, %s' % what, '100', fmt(rate, '%.1f'),
                   fmt(rate * 64, '%.0f')])
    return (['### host_call', ''] +
            table(['run', 'iterations_per_loop', 'steps/sec',
                   'examples/sec'], rows) +
            ['', 'host_call cost: 1 - rate with / rate without = %s (the '
             'median over repeats of each repeat\'s cost, and their range)'
             % spread_text(self.host_call_costs(), '%.1f%%', 100.0), ''])

  def input_bound_references(self):
    """Each repeat's min(input alone, compute alone); None if not
    measured."""
    inputs = self.rates.get(('input-bound', 'input-alone'))
    computes = self.rates.get(('mlp', 'limit'))
    if not inputs or not computes:
      return None
    return [min(i, c) if i == i else c for i, c in zip(inputs, computes)]

  def input_bound_ratios(self, workload, system):
    return ratios(self.rates.get((workload, system)),
                  self.input_bound_references())

  def input_bound_table(self):
    rows = []
    for workload, system, name in (
        ('input-bound', 'input-alone', 'input alone (a while_loop pulling '
         'batches from the pipeline)'),
        ('mlp', 'limit', 'compute alone (the mlp limit)'),
        ('input-bound', 'hook100', 'hookestimator'),
        ('input-bound', 'estimator', 'tf.estimator.Estimator')):
      if system not in SYSTEMS:
        continue
      rate = self.rate(workload, system)
      rows.append([name, loop_size(system), fmt(rate, '%.1f'),
                   fmt(rate * 64, '%.0f'),
                   spread_text(self.input_bound_ratios(workload, system),
                               '%.2fx')])
    input_us = 1e6 / self.rate('input-bound', 'input-alone')
    step_us = 1e6 / self.rate('mlp', 'limit')
    note = ('The pipeline: %d rounds of tanh(x @ M) per batch in a '
            'sequential map, no prefetch. It costs %s us per batch, %s the '
            'mlp step of the limit (%s us)' % (
                INPUT_ROUNDS, fmt(input_us, '%.0f'),
                fmt(input_us / step_us, '%.2fx'), fmt(step_us, '%.0f')))
    hook = self.rate('mlp', 'hook100')
    if hook is not None:
      note += ' and %s the mlp step at ipl 100 (%s us)' % (
          fmt(input_us * hook / 1e6, '%.2fx'), fmt(1e6 / hook, '%.0f'))
    return (['### input-bound', ''] +
            table(['system', 'iterations_per_loop', 'steps/sec',
                   'examples/sec', 'ratio to min(input alone, compute '
                   'alone)'], rows) + ['', note + '.', ''])

  def all_reduce_shares(self, workload):
    """The all-reduce's share of the N = 2 step time in each repeat: 1 -
    rate summed / rate not summed (the extra time per step over the
    summed step's time), each repeat's pair measured one after the other,
    so that a drift of the shared machine hits both alike; None if not
    measured."""
    kept = self.ratios(workload, 'replicas2', 'replicas2-nosum')
    return None if kept is None else [1.0 - k for k in kept]

  def replicas_table(self):
    rows = []
    for workload in self.replica_workloads():
      batch = BATCH_SIZES[workload]
      parameters = self.parameters.get(workload)
      for system in REPLICA_SYSTEMS:
        count, summed, _ = REPLICA_SYSTEMS[system]
        rate = self.rate(workload, system)
        share = '-'
        if count > 1 and summed:
          share = spread_text(self.all_reduce_shares(workload), '%.1f%%',
                              100.0)
        rows.append([
            workload, '%d%s' % (count, '' if summed else
                                ', gradients not summed'),
            '%d (%d)' % (batch, batch // count), fmt(rate, '%.1f'),
            fmt(rate * batch, '%.0f'),
            self.ratio_text(workload, system, 'replicas1'),
            share,
            '-' if count == 1 or not summed or not parameters else
            '%.2f' % (4.0 * parameters / 1e6)])
    sizes = ', '.join('%s %s' % (w, '{:,}'.format(self.parameters[w]))
                      for w in self.replica_workloads()
                      if w in self.parameters)
    return (['### replicas', ''] +
            table(['workload', 'replicas', 'global batch (per replica)',
                   'steps/sec', 'examples/sec', 'ratio to 1 replica',
                   'all-reduce share of step time',
                   'gradient MB summed per replica per step'], rows,
                  text_columns=2) +
            ['', 'hookestimator ipl %s, RunConfig(num_replicas=N) on N CPU '
             'devices of this machine, the optimizer wrapped in '
             'CrossShardOptimizer (the identity at 1 replica). '
             'All-reduce share = 1 - rate summed / rate not summed: the '
             'same 2 replicas whose gradients are not summed (plain '
             'optimizer; an unread cross-replica sum of a constant '
             'satisfies the framework\'s check and is pruned), timed next '
             'to the summed run in the same process; the median over '
             'repeats of each repeat\'s share (ratios and shares: the '
             'median over repeats and the range). It counts the add_n, the '
             'copies of the sum to each replica and the wait for the slower '
             'replica; a share below 0 is within the machine\'s noise. '
             'Trainable parameters (float32): %s.' % (
                 loop_size('replicas2'), sizes or 'not reported'), ''])

  def inference_table(self, workload):
    """evaluate or predict: seconds per call, examples/sec, ratios."""
    peers = [(peer, name) for peer, name in INFERENCE_PEERS
             if (workload, peer) in self.rates]
    what = ('accuracy, mean loss (last call)' if workload == 'evaluate'
            else 'examples read (last call)')
    header = (['system', 'iterations_per_loop', 'seconds per call',
               'examples/sec'] + [name for _, name in peers] + [what])
    rows = []
    for system in self.systems(workload):
      rate = self.rate(workload, system)
      row = [label(system), loop_size(system),
             fmt(median(self.seconds.get((workload, system), [])), '%.2f'),
             fmt(rate, '%.0f')]
      row += [self.ratio_text(workload, system, peer)
              for peer, _ in peers]
      answer = self.answers.get((workload, system), {})
      if workload == 'evaluate':
        row.append('%s, %s' % (fmt(answer.get('accuracy'), '%.6f'),
                               fmt(answer.get('loss'), '%.6f')))
      else:
        examples = answer.get('examples')
        row.append('n/a' if examples is None else '{:,}'.format(examples))
      rows.append(row)
    return (['### %s' % workload, ''] + table(header, rows) +
            ['', 'One %s() call per repeat, timed from the call %s, fixed '
             'costs (graph, session, checkpoint restore) '
             'included: examples/sec = %s / seconds. The mlp at batch %d '
             'over %s fixed examples (the last batch short), from '
             'Dataset.from_tensor_slices(...).batch(%d); hookestimator at '
             'iterations_per_loop %d. Each system first trained one step '
             'for its checkpoint and made one warm-up call. Ratios: the '
             'median over repeats of each repeat\'s ratio, and the range.'
             % (workload, 'until its generator is exhausted'
                if workload == 'predict' else 'to its return',
                '{:,}'.format(INFERENCE_EXAMPLES), INFERENCE_BATCH_SIZE,
                '{:,}'.format(INFERENCE_EXAMPLES), INFERENCE_BATCH_SIZE,
                INFERENCE_LOOP),
             '', 'Note: ' + NOTES[workload], ''])

  def memory_growth(self):
    """{quantity: (first 10% mean, last 10% mean, growth)}."""
    samples = self.memory['samples']
    tenth = max(1, len(samples) // 10)
    growth = {}
    for key in ('rss_mb', 'os_threads', 'python_threads'):
      first = sum(s[key] for s in samples[:tenth]) / tenth
      last = sum(s[key] for s in samples[-tenth:]) / tenth
      growth[key] = (first, last, ratio(last - first, first))
    return growth

  def memory_table(self):
    samples = self.memory['samples']
    rows = []
    for key, name in (('rss_mb', 'RSS (VmRSS), MB'),
                      ('os_threads', 'OS threads'),
                      ('python_threads', 'Python threads (active_count)')):
      first, last, growth = self.memory_growth()[key]
      rows.append([name, '%.1f' % first, '%.1f' % last,
                   fmt(growth * 100, '%+.2f%%')])
    return (['### memory', ''] +
            table(['quantity', 'mean of the first 10% of samples',
                   'mean of the last 10%', 'growth'], rows) +
            ['', 'hookestimator ipl 100 with the 3-scalar host_call: one '
             'train() call of %d steps after a warm-up call, %d samples '
             '(after every loop), %.0f steps/sec.' % (
                 self.args.memory_steps, len(samples),
                 self.args.memory_steps / self.memory['seconds']), ''])

  def repeats_table(self):
    rows = []
    for workload, system in self.pairs:
      pattern = '%.0f' if workload in INFERENCE_WORKLOADS else '%.1f'
      rows.append([workload, row_name(system), ', '.join(
          fmt(r, pattern) for r in self.rates.get((workload, system), [])),
                   fmt(self.warmup_seconds.get((workload, system)), '%.1f')])
    return (['### steps/sec per repeat', ''] +
            table(['workload', 'system', 'steps/sec per repeat (evaluate, '
                   'predict: examples/sec per call)', 'warm-up call, s'],
                  rows, text_columns=3) + [''])

  # --------------------------------------------------------------- targets
  def targets(self):
    """[(target, measured text or None, result or None)]: each ratio the
    median over repeats of each repeat's ratio (repeat i of the system
    against repeat i of its peer) with its range; a target is met only if
    every repeat meets it (verdict)."""
    targets = []

    def add(name, values, passes, pattern, scale=1.0):
      measured = numbers(values)
      targets.append((name, spread_text(measured, pattern, scale)
                      if measured else None, verdict(measured, passes)))

    def versus(name, workload, system, peer, minimum):
      add('%s: %s >= %sx %s' % (workload, name, minimum,
                                row_name(peer) if peer != 'limit' else
                                'the limit'),
          self.ratios(workload, system, peer), at_least(minimum), '%.3fx')

    def or_fallback(workload):
      return 'estimator' if HAS_ESTIMATOR else FALLBACK_PEERS[workload]

    versus('hookestimator ipl 100', 'mlp', 'hook100', 'limit', 0.90)
    versus('1 step per loop, hookestimator ipl 1', 'mlp', 'hook1',
           or_fallback('mlp'), 0.95)
    versus('hookestimator ipl 100', 'pipeline', 'hook100', 'limit', 0.90)
    if HAS_KERAS:
      versus('hookestimator ipl 100', 'pipeline', 'hook100', 'keras100', 1.1)
    versus('hookestimator ipl 100', 'gpt2-tiny', 'hook100', 'limit', 0.97)
    for workload in ('mlp', 'gpt2-tiny'):
      add('replicas: %s N=2 examples/sec >= 0.95x N=1 at the same global '
          'batch' % workload, self.ratios(workload, 'replicas2',
                                          'replicas1'),
          at_least(0.95), '%.3fx')
    add('host_call: cost <= 10%', self.host_call_costs(), at_most(0.10),
        '%.1f%%', 100.0)
    add('input-bound: hookestimator ipl 100 >= 0.85x min(input alone, '
        'compute alone)', self.input_bound_ratios('input-bound', 'hook100'),
        at_least(0.85), '%.3fx')
    for workload in INFERENCE_WORKLOADS:
      versus('hookestimator ipl %d examples/sec' % INFERENCE_LOOP, workload,
             'hook%d' % INFERENCE_LOOP, or_fallback(workload), 1.0)
    for key, name in (('rss_mb', 'RSS'), ('os_threads', 'OS thread')):
      add('memory: %s growth < 5%%' % name,
          None if self.memory is None else [self.memory_growth()[key][2]],
          below(0.05), '%+.2f%%', 100.0)
    return targets

  def targets_table(self):
    rows = [[name, measured or 'not measured', result or '-']
            for name, measured, result in self.targets()]
    return (['### targets', ''] +
            table(['target', 'measured: median (min to max over repeats)',
                   'result'], rows, text_columns=1) +
            ['', 'A target is met only if every repeat meets it: the '
             'range\'s min for a minimum, its max for a maximum; "%s" '
             'where some repeats meet it and others do not.' % STRADDLES])

  def report_lines(self):
    lines = ['Training throughput, marginal steps/sec (fixed per-call costs '
             'excluded), median of %d repeat(s)%s; each system in its own '
             'process.' % (self.args.repeats,
                           ' (--quick: tiny step counts, not meaningful)'
                           if self.args.quick else ''), '']
    if not HAS_ESTIMATOR:
      lines += [no_estimator_note('rows, targets or chart lines'), '']
    for workload in THROUGHPUT_WORKLOADS:
      if workload in self.args.workloads:
        lines += self.throughput_table(workload)
    if 'replicas' in self.args.workloads:
      lines += self.replicas_table()
    if 'host_call' in self.args.workloads:
      lines += self.host_call_table()
    if 'input-bound' in self.args.workloads:
      lines += self.input_bound_table()
    for workload in INFERENCE_WORKLOADS:
      if workload in self.args.workloads:
        lines += self.inference_table(workload)
    if self.memory is not None:
      lines += self.memory_table()
    lines += self.repeats_table()
    if self.warnings:
      lines += self.warnings + ['']
    return lines + self.targets_table()


def plotted_rate(results, workload, system):
  """The median steps/sec where it can be drawn on a log axis, else None."""
  value = results.rate(workload, system)
  return value if value is not None and value == value and value > 0 else None


def plot(results, path):
  """steps/sec against steps per session.run, log-log; one panel for mlp
  and one for gpt2-tiny. Systems without a loop size are horizontal."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  from matplotlib import ticker  # pylint: disable=g-import-not-at-top
  figure, axes = plt.subplots(1, len(THROUGHPUT_WORKLOADS), figsize=(17, 5))
  for axis, workload in zip(axes, THROUGHPUT_WORKLOADS):
    axis.set_title('%s (batch %d)' % (workload, BATCH_SIZES[workload]))
    values = []
    rate = functools.partial(plotted_rate, results, workload)
    for systems, style, name in (
        (HOOK_LOOPS, 'o-', 'hookestimator (iterations_per_loop)'),
        (('keras1', 'keras100'), 's--',
         'Keras Model.fit (steps_per_execution)')):
      points = [(int(loop_size(s)), rate(s)) for s in systems
                if s in SYSTEMS and rate(s)]
      if points:
        axis.plot([x for x, _ in points], [y for _, y in points], style,
                  label=name)
        values += [y for _, y in points]
    # The replica rows at their loop size: same global batch, so their
    # steps/sec compare with the others'.
    for system, style, name in (
        ('bare1', 'x', 'the bare loop, 1 step per session.run'),
        ('replicas1', 'D', 'hookestimator, 1 replica (CrossShardOptimizer)'),
        ('replicas2', '^', 'hookestimator, 2 replicas')):
      if rate(system):
        axis.plot([int(loop_size(system))], [rate(system)], style,
                  label=name)
        values.append(rate(system))
    # Each horizontal line carries its value, and the limit is drawn wide
    # and pale under the others: a line lying on another stays visible.
    for system, style, color, width, name in (
        ('limit', '-', 'C2', 6, 'the limit (bare while_loop)'),
        ('estimator', '--', 'C3', 1.5, 'tf.estimator.Estimator')):
      if system in SYSTEMS and rate(system):
        axis.axhline(rate(system), linestyle=style, color=color,
                     linewidth=width, alpha=0.45 if width > 2 else 1.0,
                     zorder=1 if width > 2 else 3,
                     label='%s: %.3g' % (name, rate(system)))
        values.append(rate(system))
    if values:
      low, high = min(values) / 1.3, max(values) * 1.3
      every_minor = high / low < 10
      axis.set_xscale('log')
      axis.set_yscale('log')
      axis.set_xlim(0.7, 1500)
      axis.set_ylim(low, high)
      axis.set_xticks([1, 10, 100, 1000])
      axis.set_xticklabels(['1', '10', '100', '1000'])
      plain = ticker.FuncFormatter(lambda value, _: '%g' % value)
      if every_minor:  # within a decade: evenly spaced labelled ticks
        axis.yaxis.set_major_locator(ticker.FixedLocator(
            ticker.MaxNLocator(8).tick_values(low, high)))
        axis.yaxis.set_minor_locator(ticker.NullLocator())
      else:
        axis.yaxis.set_minor_formatter(ticker.FuncFormatter(
            lambda value, _: '%g' % value if ('%.0e' % value)[0] in '25'
            else ''))
      axis.yaxis.set_major_formatter(plain)
      axis.legend(fontsize=8)
    else:
      axis.text(0.5, 0.5, 'not measured', ha='center',
                transform=axis.transAxes)
    axis.set_xlabel('steps per session.run (iterations_per_loop / '
                    'steps_per_execution)')
    axis.set_ylabel('steps/sec')
    axis.grid(True, which='both', alpha=0.3)
  figure.suptitle('TensorFlow %s%s: marginal training steps/sec, median of '
                  '%d repeat(s)' % (
                      tf.__version__, '' if HAS_ESTIMATOR else
                      ' (no tf.estimator on this line)',
                      results.args.repeats))
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)


def write_files(out, lines, results):
  """Writes peers-tfX.Y.md and .png under `out`; returns their paths."""
  if not os.path.isdir(out):
    os.makedirs(out)
  version = '.'.join(tf.__version__.split('.')[:2])
  md_path = os.path.join(out, 'peers-tf%s.md' % version)
  png_path = os.path.join(out, 'peers-tf%s.png' % version)
  with open(md_path, 'w') as md:
    md.write('\n'.join(lines) + '\n')
  plot(results, png_path)
  return md_path, png_path
