"""The cluster a run spans: TF_CONFIG (Estimator's format) or
RunConfig(cluster=...), this process's task, and where each replica and
each worker's input pipeline goes.

    TF_CONFIG='{"cluster": {"chief": ["10.0.0.1:2222"],
                            "worker": ["10.0.0.2:2222"]},
                "task": {"type": "worker", "index": 0}}'

The chief (job `chief`, task 0) is worker 0 and writes the run's files.
Task i of job `worker` is worker i + 1. Every worker builds and runs
`num_replicas` replicas on its own devices, in a graph and session of its
own, with one input pipeline on its own CPU; collective ops join the
workers (worker_sync.py). With a `feeder` job, the feeders run the input
pipelines instead (feeder_tasks.py), one each, and feed the chief, which
then trains alone (no `worker` job) from a session spanning them.

An `evaluator` task (TF_CONFIG's task type; as in Estimator it need not be
a job of the cluster) is outside the training cluster: it evaluates the
chief's checkpoints in its own process (evaluator_task.py).
"""
import json
import logging
import os
import re

import tensorflow as tf

log = logging.getLogger(__name__)

TF_CONFIG = 'TF_CONFIG'
JOBS = ('chief', 'worker', 'feeder')
EVALUATOR = 'evaluator'
_ADDRESS = re.compile(r'^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):([0-9]{1,5})$')


class Cluster(object):
  """The cluster's jobs and this process's task.

  Attributes:
    jobs: {'chief': [address], 'worker': [address, ...]}.
    task_type: 'chief', 'worker', 'feeder' or 'evaluator'.
    task_index: the task's index in its job.
  """

  def __init__(self, jobs, task_type, task_index):
    jobs = dict(jobs) if isinstance(jobs, dict) else jobs
    # Estimator's evaluator is no part of the training cluster; a cluster
    # that lists it anyway (as MultiWorkerMirroredStrategy's may) trains
    # without it.
    evaluators = jobs.pop(EVALUATOR, None) if isinstance(jobs, dict) else None
    self.jobs = _check_jobs(jobs)
    if task_type == EVALUATOR:
      count = max(len(evaluators or ()), 1)
      if (isinstance(task_index, bool) or not isinstance(task_index, int)
          or not 0 <= task_index < count):
        raise ValueError('evaluator task index %r is out of range: expected '
                         'an int from 0 to %d' % (task_index, count - 1))
    elif task_type not in self.jobs:
      raise ValueError('task type %r is not a job of the cluster; expected '
                       'one of %s' % (task_type, sorted(self.jobs)))
    elif (isinstance(task_index, bool) or not isinstance(task_index, int) or
          not 0 <= task_index < len(self.jobs[task_type])):
      raise ValueError('task index %r of job %r is out of range: the job has '
                       '%d task(s)' % (task_index, task_type,
                                       len(self.jobs[task_type])))
    self.task_type = task_type
    self.task_index = task_index

  @property
  def is_chief(self):
    return self.task_type == 'chief'

  @property
  def is_evaluator(self):
    return self.task_type == EVALUATOR

  @property
  def chief_serves(self):
    """Whether the chief runs a server (it does when the cluster trains
    on several tasks; a chief alone trains in its process)."""
    return bool(self.tasks[1:] + self.feeders)

  @property
  def num_workers(self):
    """Workers, the chief included: the number of input pipelines."""
    return len(self.jobs['chief']) + len(self.jobs.get('worker', ()))

  @property
  def tasks(self):
    """(job, index) of every worker, in worker order (the chief first)."""
    return [('chief', 0)] + [('worker', i) for i in
                             range(len(self.jobs.get('worker', ())))]

  @property
  def feeders(self):
    """(job, index) of every feeder."""
    return [('feeder', i) for i in range(len(self.jobs.get('feeder', ())))]

  @property
  def peers(self):
    """(job, index) of every task but the chief: workers, then feeders."""
    return self.tasks[1:] + self.feeders

  @property
  def task(self):
    return (self.task_type, self.task_index)

  @property
  def worker_index(self):
    """This task's index among the workers (the chief's is 0)."""
    return self.tasks.index(self.task)

  def address(self, task):
    job, index = task
    return self.jobs[job][index]

  def describe(self, task):
    """'/job:worker/task:0 (10.0.0.2:2222)'."""
    if task[0] == EVALUATOR:
      return task_name(task)
    return '%s (%s)' % (task_name(task), self.address(task))

  def host_device(self, worker):
    """The CPU of worker `worker` (an index into `tasks`)."""
    return task_name(self.tasks[worker]) + '/device:CPU:0'

  def feeder_device(self, feeder):
    """The CPU of feeder `feeder` (an index into `feeders`)."""
    return task_name(self.feeders[feeder]) + '/device:CPU:0'

  def replica_devices(self, kind, local_count):
    """This task's replicas' devices: `local_count` of its own. (Every
    worker builds and runs its own replicas; collective all-reduces join
    them.)"""
    return ['%s/device:%s:%d' % (task_name(self.task), kind.upper(), local)
            for local in range(local_count)]

  @property
  def task_cpu(self):
    """This task's CPU, where its input pipeline and bookkeeping run."""
    return task_name(self.task) + '/device:CPU:0'

  def cluster_def(self):
    """The jobs as a tf.train.ClusterSpec's dict."""
    return {job: list(addresses) for job, addresses in self.jobs.items()}

  def __eq__(self, other):
    return (isinstance(other, Cluster) and self.jobs == other.jobs and
            self.task == other.task)

  def __ne__(self, other):
    return not self == other

  def __repr__(self):
    return 'Cluster(%r, task_type=%r, task_index=%d)' % (
        self.jobs, self.task_type, self.task_index)


def task_name(task):
  return '/job:%s/task:%d' % task


def input_context(pipeline, num_pipelines, num_replicas):
  """What input_fn learns of its place in the cluster (a
  tf.distribute.InputContext): its pipeline's index among
  `num_pipelines` (a worker's or feeder's), `num_replicas` replicas in
  all."""
  return tf.distribute.InputContext(num_input_pipelines=num_pipelines,
                                    input_pipeline_id=pipeline,
                                    num_replicas_in_sync=num_replicas)


def _check_jobs(jobs):
  if not isinstance(jobs, dict):
    raise TypeError('the cluster must be a dict of job name -> list of '
                    '"host:port" addresses, got %r' % (jobs,))
  for job in jobs:
    if job not in JOBS:
      raise ValueError(
          'cluster job %r is not supported: a hookestimator cluster has a '
          '"chief", and "worker" or "feeder" tasks, and may have an '
          '"evaluator" (no parameter servers)' % (job,))
  chief = jobs.get('chief')
  if not isinstance(chief, (list, tuple)) or len(chief) != 1:
    raise ValueError('the cluster needs exactly one "chief" address, got '
                     'chief=%r' % (chief,))
  checked = {}
  for job, addresses in jobs.items():
    if not isinstance(addresses, (list, tuple)):
      raise TypeError('cluster job %r must be a list of "host:port" '
                      'addresses, got %r' % (job, addresses))
    for address in addresses:
      match = _ADDRESS.match(address) if isinstance(address, str) else None
      if match is None or not 0 < int(match.group(2)) < 65536:
        raise ValueError('cluster job %r has the address %r; expected '
                         '"host:port" with a port from 1 to 65535' %
                         (job, address))
    checked[job] = list(addresses)
  if checked.get('feeder') and checked.get('worker'):
    raise ValueError(
        'a cluster with a "feeder" job trains on the chief alone, but this '
        'one also has the "worker" job %r; drop the workers (give the chief '
        'more replicas with num_replicas) or the feeders' %
        (checked['worker'],))
  everything = [a for addresses in checked.values() for a in addresses]
  if len(set(everything)) != len(everything):
    raise ValueError('cluster addresses must be distinct, got %r' % (jobs,))
  return checked


# TF_CONFIG's keys that this module reads; Estimator's RunConfig also
# reads the rest (the drop-in's RunConfig takes its masters from them).
# Keys no one reads are ignored, as Estimator ignores them.
TF_CONFIG_KEYS = ('cluster', 'task', 'environment', 'rpc_layer',
                  'session_master', 'eval_session_master', 'service',
                  'model_dir')
# A single task of these jobs runs in-process, as Estimator's RunConfig
# runs it.
_SINGLE_TASK_JOBS = ('chief', 'master')


def load(value, source='cluster'):
  """TF_CONFIG's dict from `value` (a JSON string or a dict); {} for None
  or an empty string."""
  if value is None:
    return {}
  if isinstance(value, str):
    if not value.strip():
      return {}
    try:
      value = json.loads(value)
    except ValueError as error:
      raise ValueError('%s is not valid JSON (%s): %r' % (source, error,
                                                          value))
  if not isinstance(value, dict):
    raise TypeError('%s must be a dict with "cluster" and "task" (TF_CONFIG '
                    'format), got %r' % (source, value))
  service = value.get('service')
  if service is not None and not isinstance(service, dict):
    raise TypeError('If "service" is set in TF_CONFIG, it must be a dict; %s '
                    'has "service": %r' % (source, service))
  unknown = sorted(set(value) - set(TF_CONFIG_KEYS))
  if unknown:
    log.warning('%s has the key(s) %s, which nothing reads; the known keys '
                'are %s', source, unknown, list(TF_CONFIG_KEYS))
  return value


def read_tf_config(environ=None):
  """The TF_CONFIG environment variable's dict ({} when it is unset)."""
  environ = os.environ if environ is None else environ
  return load(environ.get(TF_CONFIG), 'the TF_CONFIG environment variable')


def parse(value, source='cluster'):
  """A Cluster from `value` in TF_CONFIG's format (a JSON string or a
  dict with 'cluster' and 'task'); None for a cluster of one task (which
  runs in this process, as Estimator runs it), or for an empty value. An
  evaluator task gets its Cluster whatever the cluster's size."""
  if isinstance(value, Cluster):
    return value
  value = load(value, source)
  jobs = value.get('cluster')
  if not jobs:
    return None
  if not isinstance(jobs, dict):
    _check_jobs(jobs)  # Raises, naming it.
  jobs = {job: addresses for job, addresses in jobs.items() if addresses}
  task = value.get('task')
  evaluator = isinstance(task, dict) and task.get('type') == EVALUATOR
  if _single_task(jobs) and not evaluator:
    log.info('%s names one task: training runs in this process.', source)
    return None
  if not isinstance(task, dict) or 'type' not in task:
    raise ValueError('%s needs a "task" with its "type" and "index" (this '
                     "process's role), got %r" % (source, task))
  cluster = Cluster(jobs, task['type'], task.get('index', 0))
  if not cluster.peers and not cluster.is_evaluator:
    log.info('%s names the chief alone: training runs in this process.',
             source)
    return None
  if value.get('rpc_layer', 'grpc') != 'grpc':
    raise ValueError('%s asks for rpc_layer %r; a cluster runs over "grpc" '
                     'only' % (source, value['rpc_layer']))
  return cluster


def _single_task(jobs):
  """Whether `jobs` is one task that Estimator runs in-process: a chief
  alone, or a "master" alone (Cloud ML Engine's single-machine jobs)."""
  if len(jobs) != 1:
    return False
  (job, addresses), = jobs.items()
  return (job in _SINGLE_TASK_JOBS and isinstance(addresses, (list, tuple))
          and len(addresses) == 1)


def from_environment(environ=None):
  """The Cluster that TF_CONFIG describes, or None."""
  environ = os.environ if environ is None else environ
  return parse(environ.get(TF_CONFIG), 'the TF_CONFIG environment variable')
