"""bench.peers results: the tables, the targets, the markdown and the figure."""
from __future__ import absolute_import, division, print_function

import functools
import os

import tensorflow as tf

from bench.common import HAS_ESTIMATOR, fmt, median, no_estimator_note
from bench.peer_systems import (GPT2_BATCH_SIZE, INPUT_ROUNDS,
                                 REPLICA_SYSTEMS, SYSTEMS)

BATCH_SIZES = {'mlp': 64, 'pipeline': 64, 'host_call': 64,
               'input-bound': 64, 'gpt2-tiny': GPT2_BATCH_SIZE}
# The workloads with a throughput table and a panel in the chart.
THROUGHPUT_WORKLOADS = ('mlp', 'pipeline', 'gpt2-tiny')
HOOK_LOOPS = ('hook1', 'hook10', 'hook100', 'hook1000')
# The ratio columns: only the peers this TensorFlow line has.
PEERS = tuple((system, name) for system, name in (
    ('limit', 'ratio to the limit'),
    ('estimator', 'ratio to tf.estimator.Estimator'),
    ('keras1', 'ratio to Keras spe 1'),
    ('keras100', 'ratio to Keras spe 100')) if system in SYSTEMS)
HAS_KERAS = 'keras100' in SYSTEMS
NOTES = {
    'gpt2-tiny': 'No Keras rows: the model is built from '
                 'tf.compat.v1.get_variable and plain ops, not Keras layers.',
    'pipeline': 'The mlp on the input pipeline users write: '
                'from_tensor_slices over the 4096 single examples, repeat, '
                'batch(64, drop_remainder=True), prefetch(AUTOTUNE). Every '
                'system reads it; the limit reads it inside its bare '
                'while_loop, one get_next per step.',
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


def judged(value, passes):
  """(value, met): met is None where the value is missing or NaN."""
  if value is None or value != value:
    return value, None
  return value, bool(passes(value))


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

  def add(self, workload, system, answer):
    rate = answer['rate']
    if answer.get('parameters'):
      self.parameters[workload] = answer['parameters']
    self.rates.setdefault((workload, system), []).append(
        float('nan') if rate is None else rate)
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
    header = ['system', 'iterations_per_loop (Keras: steps_per_execution)',
              'steps/sec', 'examples/sec'] + [name for _, name in PEERS]
    rows = []
    for system in self.systems(workload):
      rate = self.rate(workload, system)
      row = [label(system), loop_size(system), fmt(rate, '%.1f'),
             fmt(rate * BATCH_SIZES[workload], '%.0f')]
      for peer, _ in PEERS:
        peer_rate = self.rate(workload, peer)
        row.append('-' if peer_rate is None else
                   fmt(ratio(rate, peer_rate), '%.2fx'))
      rows.append(row)
    lines = ['### %s' % workload, ''] + table(header, rows)
    if workload in NOTES:
      lines += ['', 'Note: ' + NOTES[workload]]
    if not HAS_KERAS and workload == 'mlp':
      lines += ['', 'Note: no Keras rows on TensorFlow 1.x.']
    return lines + ['']

  def host_call_cost(self):
    """1 - rate with host_call / rate without; None if not measured."""
    kept = ratio(self.rate('host_call', 'hook100'),
                 self.rate('mlp', 'hook100'))
    return None if kept is None else 1.0 - kept

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
            ['', 'host_call cost: 1 - rate with / rate without = %s' %
             fmt(self.host_call_cost() * 100, '%.1f%%'), ''])

  def input_bound_reference(self):
    """min(input alone, compute alone); None if not measured."""
    rates = (self.rate('input-bound', 'input-alone'),
             self.rate('mlp', 'limit'))
    if None in rates:
      return None
    return min(rates) if rates[0] == rates[0] else rates[1]

  def input_bound_table(self):
    reference = self.input_bound_reference()
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
                   fmt(ratio(rate, reference), '%.2fx')])
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

  def replica_ratio(self, workload):
    """examples/sec at N = 2 / at N = 1 (the same global batch); None if
    not measured."""
    return ratio(self.rate(workload, 'replicas2'),
                 self.rate(workload, 'replicas1'))

  def all_reduce_share(self, workload):
    """The all-reduce's share of the N = 2 step time: 1 - rate summed /
    rate not summed (the extra time per step over the summed step's
    time), the median over repeats of each repeat's pair (measured one
    after the other, so a drift of the shared machine hits both alike);
    None if not measured."""
    summed = self.rates.get((workload, 'replicas2'))
    not_summed = self.rates.get((workload, 'replicas2-nosum'))
    if not summed or not not_summed:
      return None
    return median([1.0 - ratio(a, b) for a, b in zip(summed, not_summed)])

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
          share = fmt(self.all_reduce_share(workload) * 100, '%.1f%%')
        rows.append([
            workload, '%d%s' % (count, '' if summed else
                                ', gradients not summed'),
            '%d (%d)' % (batch, batch // count), fmt(rate, '%.1f'),
            fmt(rate * batch, '%.0f'),
            fmt(ratio(rate, self.rate(workload, 'replicas1')), '%.2fx'),
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
             'repeats of each repeat\'s share. It counts the add_n, the '
             'copies of the sum to each replica and the wait for the slower '
             'replica; a share below 0 is within the machine\'s noise. '
             'Trainable parameters (float32): %s.' % (
                 loop_size('replicas2'), sizes or 'not reported'), ''])

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
      rows.append([workload, row_name(system), ', '.join(
          fmt(r, '%.1f') for r in self.rates.get((workload, system), [])),
                   fmt(self.warmup_seconds.get((workload, system)), '%.1f')])
    return (['### steps/sec per repeat', ''] +
            table(['workload', 'system', 'steps/sec per repeat',
                   'warm-up call, s'], rows, text_columns=3) + [''])

  # --------------------------------------------------------------- targets
  def targets(self):
    """[(target, measured text, met: True/False/None)]."""
    targets = []

    def add(name, value, passes, pattern, scale=1.0):
      value, met = judged(value, passes)
      targets.append((name, None if value is None else
                      fmt(value * scale, pattern), met))

    def versus(name, workload, system, peer, minimum):
      add(name, ratio(self.rate(workload, system), self.rate(workload, peer)),
          lambda value: value >= minimum, '%.3fx')

    versus('mlp: hookestimator ipl 100 >= 0.90x the limit', 'mlp', 'hook100',
           'limit', 0.90)
    if HAS_KERAS:
      versus('mlp: hookestimator ipl 100 >= 1.0x Keras spe 100', 'mlp',
             'hook100', 'keras100', 1.0)
    if HAS_ESTIMATOR:
      versus('mlp: hookestimator ipl 100 >= 3x tf.estimator.Estimator',
             'mlp', 'hook100', 'estimator', 3.0)
      versus('mlp: hookestimator ipl 1 >= 0.9x tf.estimator.Estimator',
             'mlp', 'hook1', 'estimator', 0.9)
    versus('pipeline: hookestimator ipl 100 >= 0.90x the limit (the same '
           'pipeline in a bare while_loop)', 'pipeline', 'hook100', 'limit',
           0.90)
    if HAS_KERAS:
      versus('pipeline: hookestimator ipl 100 >= 1.0x Keras spe 100',
             'pipeline', 'hook100', 'keras100', 1.0)
    versus('gpt2-tiny: hookestimator ipl 100 >= 0.97x the limit',
           'gpt2-tiny', 'hook100', 'limit', 0.97)
    for workload in ('mlp', 'gpt2-tiny'):
      versus('replicas: %s N=2 examples/sec >= 0.9x N=1 at the same global '
             'batch' % workload, workload, 'replicas2', 'replicas1', 0.9)
    add('host_call: cost <= 10%', self.host_call_cost(),
        lambda cost: cost <= 0.10, '%.1f%%', 100.0)
    add('input-bound: hookestimator ipl 100 >= 0.85x min(input alone, '
        'compute alone)', ratio(self.rate('input-bound', 'hook100'),
                                self.input_bound_reference()),
        lambda value: value >= 0.85, '%.3fx')
    for key, name in (('rss_mb', 'RSS'), ('os_threads', 'OS thread')):
      add('memory: %s growth < 5%%' % name,
          None if self.memory is None else self.memory_growth()[key][2],
          lambda growth: growth < 0.05, '%+.2f%%', 100.0)
    return targets

  def targets_table(self):
    rows = [[name, measured or 'not measured',
             '-' if met is None else ('met' if met else 'MISSED')]
            for name, measured, met in self.targets()]
    return ['### targets', ''] + table(['target', 'measured', 'result'],
                                        rows, text_columns=1)

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
