"""A cluster task's TF server and its talk with the other tasks, all
through TensorFlow's own gRPC runtime (nothing here opens a socket).

- `server(cluster, config)`: this process's tf.distribute.Server, started
  once. TensorFlow cannot stop a gRPC server in-process, so its port
  closes when the process exits: a worker's or feeder's process ends
  with its run, and `hookestimator train` exits when the chief's run
  ends.
- Reaching a peer: a session on this task's server running a trivial op
  on the peer. Creating a session waits for every task it names without
  a deadline, so the first contact runs on a thread joined with one.
- Messages: the chief keeps one queue per other task (an outbox) and one
  inbox on its own CPU; a task takes its message from its outbox and
  answers in the inbox. A message is an exit status and a text.
- Bounded exits: a session with a lost task cannot be closed (TensorFlow
  waits for the task forever), so on every path where a task was lost the
  process is ended after EXIT_GRACE_SECS by faulthandler, whatever hangs.
"""
import faulthandler
import logging
import os
import sys
import threading
import time

import tensorflow as tf

from hookestimator import cluster as cluster_lib
from hookestimator.compat import v1

log = logging.getLogger(__name__)

# A probe is a trivial op run on the peer; it gets this long to answer.
PROBE_SECS = 5
# A peer is lost once it refuses connections this many probes in a row (its
# process is gone), or has answered no probe for SILENT_SECS (its machine
# hangs or is cut off: a loaded machine answers late, not never).
REFUSALS_LOST = 3
SILENT_SECS = 30
# How often the chief checks the other tasks, and each task its outbox.
WATCH_SECS = 1.0
POLL_SECS = 1.0
# Between tries to reach a peer that is not listening yet.
RETRY_SECS = 0.25
# How long the chief waits for every task to read its last message.
ANSWER_SECS = 10
# After a task was lost, the process ends at most this long after.
EXIT_GRACE_SECS = 15
EXIT_LOST = 1

_OUTBOX_CAPACITY = 4
_INBOX_CAPACITY = 64

_server_lock = threading.Lock()
_servers = {}


class LostTaskError(RuntimeError):
  """A task of the cluster stopped answering, or never answered."""


class RunFailedError(RuntimeError):
  """The chief's run failed; a worker or feeder exits with this."""


def server(cluster, session_config):
  """This process's started server for `cluster` (one per process)."""
  with _server_lock:
    if _servers and cluster not in _servers.values():
      running = list(_servers.values())[0]
      raise ValueError(
          'This process already runs the server of %r; a process serves one '
          'task of one cluster, got %r' % (running, cluster))
    for started, its_cluster in _servers.items():
      if its_cluster == cluster:
        return started
    config = server_config(session_config)
    started = v1.train.Server(tf.train.ClusterSpec(cluster.cluster_def()),
                              job_name=cluster.task_type,
                              task_index=cluster.task_index, config=config,
                              start=True)
    log.warning(
        'Task %s serves TensorFlow gRPC on port %s, unauthenticated: anyone '
        'who can reach that port can run any graph as this user. Keep the '
        'cluster on a private network (see docs/cluster.md).',
        cluster_lib.task_name(cluster.task),
        cluster.address(cluster.task).rsplit(':', 1)[1])
    _servers[started] = cluster
    return started


def server_config(session_config):
  """A copy of `session_config` (None: soft placement) for a cluster's
  servers and sessions: the chief leads the collective ops' groups."""
  config = v1.ConfigProto(allow_soft_placement=True)
  if session_config is not None:
    config.CopyFrom(session_config)
  config.experimental.collective_group_leader = '/job:chief/replica:0/task:0'
  return config


def end_process_after(seconds, reason):
  """Ends the process with status EXIT_LOST after `seconds`, even if a
  TensorFlow call hangs (faulthandler's watchdog runs outside Python)."""
  log.error('%s; this process ends within %d s.', reason, seconds)
  faulthandler.dump_traceback_later(seconds, exit=True)


def _cpu(task):
  return cluster_lib.task_name(task) + '/device:CPU:0'


def _outbox(peer):
  """The chief's messages to peer `peer` (an index into cluster.peers)."""
  return v1.FIFOQueue(_OUTBOX_CAPACITY, [tf.string], shapes=[[]],
                      shared_name='hookestimator_outbox_%d' % peer,
                      name='outbox_%d' % peer)


def _inbox():
  return v1.FIFOQueue(_INBOX_CAPACITY, [tf.string], shapes=[[]],
                      shared_name='hookestimator_inbox', name='inbox')


def _timeout(seconds):
  return v1.RunOptions(timeout_in_ms=int(seconds * 1000))


class _Link(object):
  """A session from this task to `peer`: a probe, and what `build` adds
  (built on the chief's CPU)."""

  def __init__(self, target, cluster, peer, build=None):
    self.peer = peer
    self.name = cluster.describe(peer)
    self.graph = tf.Graph()
    with self.graph.as_default():
      with tf.device(_cpu(peer)):
        self.probe = tf.identity(tf.constant(0), name='probe')
      with tf.device(_cpu(('chief', 0))):
        self.ops = build() if build is not None else None
    self._target = target
    tasks = {cluster_lib.task_name(peer)}
    if cluster.task[0] in cluster.jobs:  # Not an evaluator's, outside it.
      tasks.add(cluster_lib.task_name(cluster.task))
    self._config = v1.ConfigProto(device_filters=sorted(tasks))
    self.session = None
    self.connected = False
    self.health = Health()

  def start_connecting(self, deadline):
    """Probes the peer on a thread until it answers or `deadline` (a
    time.monotonic()) passes; returns the thread."""
    thread = threading.Thread(target=self._first_probe, args=(deadline,),
                              daemon=True, name='connect %s' % self.name)
    thread.start()
    return thread

  def _first_probe(self, deadline):
    # A peer not listening yet refuses at once (UnavailableError), or the
    # session's creation waits for it: try again until the deadline.
    while True:
      session = v1.Session(self._target, graph=self.graph,
                           config=self._config)
      try:
        session.run(self.probe)
        self.session = session
        self.connected = True
        return
      except tf.errors.OpError as error:
        session.close()
        if time.monotonic() > deadline:
          log.info('Task %s: %s', self.name, _first_line(error))
          return
      time.sleep(RETRY_SECS)

  def alive(self):
    return self.health.record(self._probe()) == ANSWERED

  def _probe(self):
    try:
      self.session.run(self.probe, options=_timeout(PROBE_SECS))
      return ANSWERED
    except tf.errors.OpError as error:
      return outcome_of(error)

  def close(self):
    if self.session is not None:
      self.session.close()


ANSWERED, REFUSED, SILENT = 'answered', 'refused', 'silent'


def outcome_of(error):
  """What a failed call to a peer says of it: REFUSED when nothing
  listens there, else SILENT."""
  return (REFUSED if isinstance(error, tf.errors.UnavailableError) else
          SILENT)


class Health(object):
  """A peer's probes so far: lost after REFUSALS_LOST refusals in a row,
  or SILENT_SECS without an answer."""

  def __init__(self):
    self._refusals = 0
    self._answered = time.monotonic()
    self.lost = False

  def record(self, outcome):
    """Records a probe's outcome; returns it."""
    now = time.monotonic()
    if outcome == ANSWERED:
      self._refusals = 0
      self._answered = now
    else:
      self._refusals = self._refusals + 1 if outcome == REFUSED else 0
      self.lost = self.lost or (self._refusals >= REFUSALS_LOST or
                                now - self._answered > SILENT_SECS)
    return outcome


def connect(links, timeout):
  """Waits up to `timeout` seconds for every link's peer to answer; raises
  LostTaskError naming those that did not."""
  deadline = time.monotonic() + timeout
  threads = [link.start_connecting(deadline) for link in links]
  for thread in threads:
    thread.join(max(0.0, deadline - time.monotonic()))
  missing = [link.name for link in links if not link.connected]
  if missing:
    error = LostTaskError(
        'task(s) %s did not answer within peer_timeout_secs=%g s; start '
        'every task of the cluster (the same command, each with its own '
        'TF_CONFIG) and check that their addresses are reachable' %
        (', '.join(missing), timeout))
    end_process_after(EXIT_GRACE_SECS, str(error))
    raise error


class ChiefPeers(object):
  """The chief's side: waits for the other tasks (workers and feeders),
  watches them during the run, and tells them how it ended."""

  def __init__(self, server_, cluster):
    self._cluster = cluster
    self._links = [_Link(server_.target, cluster, task)
                   for task in cluster.peers]
    self._graph = tf.Graph()
    with self._graph.as_default(), tf.device(_cpu(('chief', 0))):
      self._message = v1.placeholder(tf.string, [])
      self._posts = [_outbox(p).enqueue(self._message)
                     for p in range(len(cluster.peers))]
      self._answer = _inbox().dequeue()
    self._local = v1.Session(
        server_.target, graph=self._graph,
        config=v1.ConfigProto(device_filters=['/job:chief/task:0']))
    self._watching = None
    self._stop_watching = threading.Event()
    self._lost = []
    self._posted = False
    self._lock = threading.Lock()

  def wait(self, timeout):
    """Waits for every other task to answer, and to have reached the chief
    (a task's first tries can leave its channel to the chief backing
    off for seconds, failing the first loop): each says hello."""
    deadline = time.monotonic() + timeout
    connect(self._links, timeout)
    missing = set(link.name for link in self._links)
    while missing:
      left = deadline - time.monotonic()
      try:
        hello = self._local.run(self._answer,
                                options=_timeout(max(left, 0.001)))
      except tf.errors.DeadlineExceededError:
        error = LostTaskError(
            'task(s) %s did not reach the chief within '
            'peer_timeout_secs=%g s' % (', '.join(sorted(missing)), timeout))
        end_process_after(EXIT_GRACE_SECS, str(error))
        raise error
      missing.discard(hello.decode('utf-8'))
    log.info('Every task of the cluster answered: %s',
             ', '.join(self._cluster.describe(t) for t in
                       [('chief', 0)] + self._cluster.peers))

  def watch(self):
    """Probes every other task each WATCH_SECS on a thread; a lost one
    ends the run (the others are told, and this process ends)."""
    self._watching = threading.Thread(target=self._watch, daemon=True,
                                      name='ClusterWatch')
    self._watching.start()

  def _watch(self):
    while not self._stop_watching.wait(WATCH_SECS):
      for link in self._links:
        link.alive()
      lost = [link.name for link in self._links if link.health.lost]
      if lost:
        lost = self._record_lost(lost)
        message = lost_message(lost)
        self.post(EXIT_LOST, message)
        end_process_after(EXIT_GRACE_SECS, message)
        return

  def stop_watching(self):
    self._stop_watching.set()
    if self._watching is not None:
      self._watching.join(PROBE_SECS * 2)

  def lost(self):
    """The names of the tasks that do not answer now (and of those
    found lost before)."""
    return self._record_lost(self._not_answering())

  def found_lost(self):
    """The names of the tasks the watch found lost."""
    return self._record_lost([])

  def _not_answering(self):
    return [link.name for link in self._links if not link.alive()]

  def _record_lost(self, names):
    with self._lock:
      self._lost.extend(n for n in names if n not in self._lost)
      return list(self._lost)

  def close_links(self):
    """Closes the sessions with the other tasks; only while every one
    answers (closing one with a lost task hangs)."""
    for link in self._links:
      link.close()

  def post(self, code, text):
    """Tells every task not lost to exit with `code`, saying `text`;
    waits up to ANSWER_SECS for them to take it. Once per run."""
    with self._lock:
      if self._posted:
        return
      self._posted = True
      lost = list(self._lost)
    told = 0
    for link, post in zip(self._links, self._posts):
      if link.name not in lost:
        self._local.run(post, {self._message: '%d\t%s' % (code, text)})
        told += 1
    deadline = time.monotonic() + ANSWER_SECS
    for _ in range(told):
      left = deadline - time.monotonic()
      try:
        self._local.run(self._answer, options=_timeout(max(left, 0.001)))
      except tf.errors.DeadlineExceededError:
        log.warning('A task did not take the end-of-run message within '
                    '%d s', ANSWER_SECS)
        return


class ChiefWatch(object):
  """A task outside the training cluster (an evaluator) watching its
  chief through the chief's own server.

  Each probe is a session of its own, made, run and closed on a daemon
  thread joined with a deadline: the evaluator holds no session with the
  chief between probes, so nothing is left to close with a chief that is
  gone (closing one waits for it), and a probe that hangs is SILENT.
  """

  def __init__(self, cluster):
    chief = ('chief', 0)
    self.name = cluster.describe(chief)
    self._target = 'grpc://' + cluster.address(chief)
    self._graph = tf.Graph()
    with self._graph.as_default(), tf.device(_cpu(chief)):
      self._probe_op = tf.identity(tf.constant(0), name='probe')
    self._config = v1.ConfigProto(
        device_filters=[cluster_lib.task_name(chief)])
    self.health = Health()

  def _probe(self):
    outcome = [SILENT]

    def probe():
      session = v1.Session(self._target, graph=self._graph,
                           config=self._config)
      try:
        session.run(self._probe_op, options=_timeout(PROBE_SECS))
        outcome[0] = ANSWERED
      except tf.errors.OpError as error:
        outcome[0] = outcome_of(error)
      finally:
        session.close()
    thread = threading.Thread(target=probe, daemon=True,
                              name='probe %s' % self.name)
    thread.start()
    thread.join(PROBE_SECS * 2)
    return outcome[0]

  def wait(self, timeout):
    """Waits up to `timeout` seconds for the chief's first answer; raises
    LostTaskError if it gives none."""
    deadline = time.monotonic() + timeout
    while self._probe() != ANSWERED:
      if time.monotonic() > deadline:
        raise LostTaskError(
            'the chief %s did not answer within peer_timeout_secs=%g s; '
            'start every task of the cluster and check that its address is '
            'reachable' % (self.name, timeout))
      time.sleep(RETRY_SECS)
    self.health.record(ANSWERED)

  def probe(self):
    """Probes the chief once; its outcome (ANSWERED, REFUSED or SILENT).
    `health.lost` tells when it is lost (REFUSALS_LOST refusals in a row,
    or SILENT_SECS without an answer)."""
    return self.health.record(self._probe())


def lost_message(names):
  return ('lost task %s: it stopped answering, so the run stops here. '
          "Restart every task to resume from the chief's last checkpoint" %
          ', '.join(names))


def run_chief(cluster, server_, timeout, run):
  """Runs `run()` (the training) on the chief, with every other task waited
  for first, watched during it and told how it ended after it."""
  peers = ChiefPeers(server_, cluster)
  peers.wait(timeout)
  peers.watch()
  try:
    result = run()
  except SystemExit as stop:  # A signal stopped training, checkpointed.
    peers.stop_watching()
    peers.close_links()
    peers.post(stop.code if isinstance(stop.code, int) else EXIT_LOST,
               str(stop))
    raise
  except BaseException as error:
    peers.stop_watching()
    lost = peers.lost()
    if lost:
      message = lost_message(lost)
      peers.post(EXIT_LOST, message)
      end_process_after(EXIT_GRACE_SECS, message)
      raise LostTaskError(message) from error
    peers.close_links()
    peers.post(EXIT_LOST, 'the chief failed: %s: %s' % (
        type(error).__name__, _first_line(error)))
    raise
  peers.stop_watching()
  lost = peers.found_lost()
  if lost:  # Found while the run ended: the watch ends this process.
    raise LostTaskError(lost_message(lost))
  peers.close_links()
  peers.post(0, 'the run ended')
  return result


def serve(cluster, server_, timeout):
  """A feeder's part: waits for the chief, serves its run (the chief's
  session runs this task's input pipeline), and when the chief says the
  run ended, or stops answering, ends the process: status 0 when the run
  succeeded, else non-zero. Never returns."""
  _await_end(*_greet_chief(cluster, server_, timeout))


def run_worker(cluster, server_, timeout, run):
  """A worker's part: greets the chief, runs `run()` (its own training,
  in step with the others), and ends the process as the chief says the
  run ended: the chief's status, or this worker's own where its run
  failed or a signal stopped it. The chief is watched from the start; if
  it is lost, the process ends non-zero within EXIT_GRACE_SECS, whatever
  the training is doing. Never returns."""
  greeting = _greet_chief(cluster, server_, timeout)
  watch = threading.Thread(target=_await_end, args=greeting, daemon=True,
                           name='ChiefWatch')
  watch.start()
  name = cluster_lib.task_name(cluster.task)
  try:
    run()
  except SystemExit as stop:  # A signal stopped training, checkpointed.
    watch.join(ANSWER_SECS + SILENT_SECS)
    _exit(stop.code if isinstance(stop.code, int) else EXIT_LOST, str(stop))
  except BaseException as error:  # pylint: disable=broad-except
    log.exception('Worker %s failed', name)
    _exit(EXIT_LOST, 'Worker %s failed: %s: %s' % (
        name, type(error).__name__, _first_line(error)))
  # The chief's word on how the run ended (its final checkpoint written)
  # ends this process.
  watch.join()
  _exit(EXIT_LOST, 'Worker %s: the chief watch ended' % name)


def _greet_chief(cluster, server_, timeout):
  """Connects to the chief and says hello; returns what _await_end needs.
  Ends the process if the chief does not answer within `timeout`."""
  peer = cluster.peers.index(cluster.task)
  name = cluster_lib.task_name(cluster.task)
  role = cluster.task_type.capitalize()

  def build():
    answer = v1.placeholder(tf.string, [])
    outbox = _outbox(peer)
    return (outbox.size(), outbox.dequeue(), _inbox().enqueue(answer),
            answer)
  chief = _Link(server_.target, cluster, ('chief', 0), build)
  waiting, take, give, answer = chief.ops
  deadline = time.monotonic() + timeout
  try:
    connect([chief], timeout)
    # The hello crosses both ways (the chief fetches the fed name from
    # here); a channel that refused a first try backs off for a while,
    # failing at once until it connects again.
    while True:
      try:
        chief.session.run(give, {answer: cluster.describe(cluster.task)},
                          options=_timeout(PROBE_SECS))
        break
      except tf.errors.UnavailableError:
        if time.monotonic() > deadline:
          raise
        time.sleep(RETRY_SECS)
  except (LostTaskError, tf.errors.OpError) as error:
    _exit(EXIT_LOST, '%s %s: %s' % (role, name, _first_line(error)))
  log.info('%s %s serves the chief %s', role, name, chief.name)
  return chief, role, name


def _await_end(chief, role, name):
  """Polls the chief's outbox until it says how the run ended, then ends
  the process with its status; ends it non-zero if the chief is lost."""
  waiting, take, give, answer = chief.ops
  message = None
  while message is None:
    # Looks before it takes: a dequeue cut off by its deadline may have
    # taken the message already, and it would be lost. Each look is a
    # probe of the chief.
    try:
      if chief.session.run(waiting, options=_timeout(PROBE_SECS)):
        message = chief.session.run(take, options=_timeout(SILENT_SECS))
      chief.health.record(ANSWERED)
    except tf.errors.OpError as error:
      chief.health.record(outcome_of(error))
    if chief.health.lost:
      text = '%s %s: %s' % (role, name, lost_message([chief.name]))
      end_process_after(EXIT_GRACE_SECS, text)
      _exit(EXIT_LOST, text)
    if message is None:
      time.sleep(POLL_SECS)
  code, text = message.decode('utf-8').split('\t', 1)
  try:
    chief.session.run(give, {answer: name}, options=_timeout(PROBE_SECS))
  except tf.errors.OpError:
    pass  # The chief is gone already; it gave its word.
  _exit(int(code), '%s %s: %s' % (role, name, text))


def _exit(code, text):
  """Ends the process at once: its sessions name other tasks, and closing
  them would wait for those tasks."""
  (log.info if code == 0 else log.error)(text)
  print('hookestimator: %s' % text, file=sys.stderr if code else sys.stdout)
  for stream in (sys.stdout, sys.stderr):
    stream.flush()
  logging.shutdown()
  os._exit(code)  # pylint: disable=protected-access


def _first_line(error):
  """The line of an error's message that says what failed (TF 2.x puts a
  'Graph execution error:' header first)."""
  message = getattr(error, 'message', None) or str(error)
  for line in message.splitlines():
    line = line.strip()
    if line and not line.startswith(('Graph execution error', 'Detected at',
                                     '[[', 'File ')) and not line.endswith(':'):
      return line
  return message.strip().split('\n')[0]
