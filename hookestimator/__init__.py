"""hookestimator: a slim, fast TPUEstimator-style trainer for tf.compat.v1.

Many training steps per session.run in an on-device loop, fed and drained
by host controller threads, with every moving part a SessionRunHook.
"""
from hookestimator.config import RunConfig
from hookestimator.estimator import HookEstimator
from hookestimator.feeder_tasks import feed_forever
from hookestimator.model_dir import CheckpointMismatchError
from hookestimator.nan import NanLossError
from hookestimator.task_server import LostTaskError
from hookestimator.replicas import cross_replica_sum
from hookestimator.signals import TrainingInterrupted
from hookestimator.spec import EstimatorSpec
from hookestimator.spec import HookEstimatorSpec
from hookestimator.spec import ModeKeys

__all__ = ['CheckpointMismatchError', 'EstimatorSpec', 'HookEstimator',
           'HookEstimatorSpec', 'LostTaskError',
           'ModeKeys', 'NanLossError', 'RunConfig', 'TrainingInterrupted',
           'cross_replica_sum', 'feed_forever']
__version__ = '0.1.0'
