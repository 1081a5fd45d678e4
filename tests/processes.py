"""Processes of multi-process tests: each started in its own process
group, every group killed when the test ends, pass or fail; free
127.0.0.1 ports chosen at run time."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_SECS = 120  # No process of these tests may run longer.
LOST_SECS = 60  # The bound for noticing a lost task.


def free_ports(count):
  sockets = []
  try:
    for _ in range(count):
      s = socket.socket()
      s.bind(('127.0.0.1', 0))
      sockets.append(s)
    return [s.getsockname()[1] for s in sockets]
  finally:
    for s in sockets:
      s.close()


def listening(port):
  """Whether anything accepts connections on 127.0.0.1:`port`."""
  s = socket.socket()
  s.settimeout(1)
  try:
    return s.connect_ex(('127.0.0.1', port)) == 0
  finally:
    s.close()


def tf_config(ports, task_type, index=0, job='worker'):
  """TF_CONFIG of a loopback cluster: the chief on ports[0], a task of
  `job` on each other port; this process is task `index` of `task_type`."""
  return json.dumps({
      'cluster': {'chief': ['127.0.0.1:%d' % ports[0]],
                  job: ['127.0.0.1:%d' % p for p in ports[1:]]},
      'task': {'type': task_type, 'index': index}})


class Processes(object):
  """Processes started in their own process groups; every group is killed
  on the way out, pass or fail."""

  def __init__(self, tmp_path):
    self._tmp_path = tmp_path
    self._started = []

  def start_command(self, name, argv, tf_config_value=None):
    """Starts Python with `argv`, TF_CONFIG set to `tf_config_value`."""
    log = open(str(self._tmp_path / ('%s.log' % name)), 'w')
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    env.pop('TF_CONFIG', None)
    if tf_config_value is not None:
      env['TF_CONFIG'] = tf_config_value
    process = subprocess.Popen(
        [sys.executable] + argv, cwd=REPO_ROOT, env=env, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True)
    process.log_path = log.name
    log.close()
    process.started = time.monotonic()
    self._started.append(process)
    return process

  def wait(self, process, timeout=RUN_SECS):
    """(exit status, seconds since it started, its output)."""
    code = process.wait(timeout)
    with open(process.log_path) as f:
      return code, time.monotonic() - process.started, f.read()

  def __enter__(self):
    return self

  def __exit__(self, *unused):
    for process in self._started:
      try:
        os.killpg(process.pid, signal.SIGKILL)
      except OSError:
        pass  # Ended already, with its group.
      process.wait(10)
