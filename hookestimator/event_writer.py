"""TensorBoard event files: each run writes through writers of its own and
closes them when it ends.

TensorFlow's `FileWriterCache` keeps one writer, and its thread, per
directory for the life of the process; a process that runs many trainings
(a sweep, a notebook) would pile them up. An `EventWriter` belongs to one
run instead: it creates its event file at the first summary (a run that
fails before writing anything leaves no file behind), and `close()` at
the run's end, whether it succeeded, failed or was stopped by a signal,
writes out every event and ends the writer's thread.

Each writer's file name ends in a suffix of its own, so that two runs
into one directory within the same second do not write the same file.

The graph goes into the file once, as its structure: large constants (an
in-memory dataset's arrays) keep their dtype and shape but not their
values (graph_structure.py). The meta graph, which would carry the same
constants again, is not written: TensorBoard draws the graph from the
graph definition.

A run writes one event file into its directory: whatever else belongs in
it (the gin command's operative config) is written through the run's
writer by a `TextSummaryHook`.
"""
import itertools
import logging
import os
import threading

import tensorflow as tf

from hookestimator import graph_structure
from hookestimator.compat import v1

log = logging.getLogger(__name__)

_numbers = itertools.count(1)


class EventWriter(object):
  """A run's event file in `logdir`, with `graph`'s definition when given;
  with no `logdir` (a cluster's worker, whose chief writes the run's
  events) every summary is dropped.

  add_summary and flush may be called from any thread; after close() a
  summary is dropped (a thread still running past the end of its run
  writes nothing more).
  """

  def __init__(self, logdir, graph=None):
    self.logdir = logdir
    self._graph = graph
    self._lock = threading.Lock()
    self._writer = None
    self._closed = False

  def add_summary(self, summary, step):
    """Writes `summary` (a Summary or its serialized bytes) at `step`."""
    writer = self._open()
    if writer is not None:
      writer.add_summary(summary, step)

  def flush(self):
    with self._lock:
      writer = self._writer
    if writer is not None:
      writer.flush()

  def close(self):
    """Writes out every event and ends the writer's thread; idempotent."""
    with self._lock:
      writer, self._writer = self._writer, None
      self._closed = True
    if writer is not None:
      writer.close()

  def _open(self):
    if self.logdir is None:
      return None
    with self._lock:
      if self._closed:
        log.warning('A summary for %s came after its run ended; dropped',
                    self.logdir)
        return None
      if self._writer is None:
        self._writer = _file_writer(self.logdir, self._graph)
      return self._writer


class TextSummaryHook(v1.train.SessionRunHook):
  """Writes `text` as a TensorBoard text summary under `tag` at `step`
  through the writer of the run it is given to (a training run hands its
  writer to each such hook among its hooks), once its session exists.

  The text is shown as markdown code: kept as it is, line by line.
  """

  def __init__(self, tag, text, step):
    if not tag:
      raise ValueError('TextSummaryHook needs a tag, got %r' % (tag,))
    self.tag = tag
    self.text = text
    self.step = int(step)
    self._writer = None

  def use_writer(self, writer):
    """Called by the run with its EventWriter, before the session."""
    self._writer = writer

  def after_create_session(self, session, coord):
    del session, coord
    if self._writer is None:
      raise RuntimeError(
          'TextSummaryHook(%r) was given no event writer: pass it in a '
          "training run's hooks" % self.tag)
    self._writer.add_summary(text_summary(self.tag, self.text), self.step)


def text_summary(tag, text):
  """A Summary holding `text` for TensorBoard's text plugin, as code."""
  summary = v1.Summary()
  value = summary.value.add(tag=tag)
  value.metadata.plugin_data.plugin_name = 'text'
  value.tensor.CopyFrom(tf.make_tensor_proto(
      '    ' + text.replace('\n', '\n    ')))  # markdown: keep as code
  return summary


def _file_writer(logdir, graph):
  # TensorFlow 2's v1 writers refuse eager mode: made in graph mode.
  with (graph if graph is not None else tf.Graph()).as_default():
    # Not FileWriter(graph=...): that writes the meta graph too, and both
    # with every constant's values.
    writer = v1.summary.FileWriter(
        logdir, filename_suffix='.%d.%d' % (os.getpid(), next(_numbers)))
    if graph is not None:
      writer.add_graph(None, graph_def=graph_structure.graph_def(graph))
    return writer
