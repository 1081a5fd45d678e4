"""Device kinds: where the model runs, and what system init/shutdown mean.

CPU and GPU need no system initialisation: `check()` finds the devices and
fails plainly when the requested kind is absent. A TPU system is
initialised and shut down in a graph and session of its own, before the
first loop and after the last, as TPUEstimator does.
"""
import logging
import time

import tensorflow as tf

from hookestimator import compat
from hookestimator.compat import v1

log = logging.getLogger(__name__)


class DeviceNotFoundError(RuntimeError):
  """The requested device kind is not on this machine."""


class Device(object):
  """A device kind; `kind` is 'cpu', 'gpu' or 'tpu'."""

  def __init__(self, kind, list_devices=compat.physical_devices):
    self.kind = kind
    self._list_devices = list_devices
    # On TPU the whole loop is one TPU program; nothing is placed by hand.
    self.model_device = None if kind == 'tpu' else '/device:%s:0' % kind.upper()
    self.init_graph = None
    self._found = None
    self._init_op = None
    self._shutdown_op = None
    if kind == 'tpu':
      with tf.Graph().as_default() as self.init_graph:
        self._init_op = v1.tpu.initialize_system()
        self._shutdown_op = v1.tpu.shutdown_system()

  def check(self):
    """Returns the devices of this kind; raises DeviceNotFoundError if none."""
    found = self._list_devices(self.kind.upper())
    if not found:
      everything = sorted(set(self._list_devices('CPU') +
                              self._list_devices('GPU')))
      hint = (' A TPU system needs a TPU host (a TPU VM); run with '
              "device='cpu' or 'gpu' elsewhere." if self.kind == 'tpu' else '')
      raise DeviceNotFoundError(
          "device=%r was requested but this machine has no %s device; found "
          '%s.%s' % (self.kind, self.kind.upper(), ', '.join(everything) or
                     'no devices', hint))
    if found != self._found:  # said once, though several hooks may ask
      log.info('Running on %s; %s devices found: %s', self.kind,
               self.kind.upper(), ', '.join(found))
      self._found = found
    return found

  def initialize(self, session_config=None):
    """Initialises the device system (TPU only) in its own session."""
    if self._init_op is None:
      return
    start = time.monotonic()
    with v1.Session(graph=self.init_graph, config=session_config) as session:
      session.run(self._init_op)
    log.info('Initialised the TPU system in %.1f s', time.monotonic() - start)

  def shutdown(self, session_config=None):
    """Shuts the device system down (TPU only) in its own session."""
    if self._shutdown_op is None:
      return
    with v1.Session(graph=self.init_graph, config=session_config) as session:
      session.run(self._shutdown_op)
    log.info('Shut down the TPU system')
