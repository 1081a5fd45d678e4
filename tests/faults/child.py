"""The training program the fault-injection tests run in subprocesses.

    python -m tests.faults.child errors MODEL_DIR
    python -m tests.faults.child train MODEL_DIR [--max-steps N] ...
    python -m tests.faults.child stress MODEL_DIR --mode MODE [--feeding F]

It reports on stdout, one line per event: `EVENT {json}`. `errors` runs one
small training per injected fault and reports what came out of train();
`train` trains the integer-id model, reporting the step it started from,
that training is under way, and how it ended. `stress` reports `ready`
once imported, then runs one short train, evaluate, predict or
train_and_evaluate of that model (bench/signal_stress.py signals it at
random moments).

Whatever started it, SIGINT raises KeyboardInterrupt in the child (a
background shell starts its children with SIGINT ignored, and ignored
signals stay ignored in train()), and SIGUSR1 dumps every thread's stack
to stderr, so that a child that hangs can say where.
"""
import argparse
import faulthandler
import json
import os
import signal
import sys
import threading
import time

import numpy as np
import tensorflow as tf

import hookestimator as he
from hookestimator.config import FEEDING_PATHS
from hookestimator.input_position import is_input_position_key
from tests.conftest import FailingHook

v1 = tf.compat.v1

NUM_IDS = 40          # examples per epoch, with integer ids 0..39
BATCH_SIZE = 4        # 10 steps per epoch
SHUFFLE_SEED = 7
RECORDED_STEPS = 400  # rows of the ids_by_step variable
FAULT_STEP = 7
STRESS_MODES = ('train', 'evaluate', 'predict', 'train_and_evaluate')
STRESS_EPOCHS = 5     # of evaluation and prediction input


def emit(event, **fields):
  fields['event'] = event
  sys.stdout.write('EVENT %s\n' % json.dumps(fields))
  sys.stdout.flush()


def ids_dataset(batch_size):
  """Every id once per epoch, reshuffled each epoch (seeded)."""
  dataset = tf.data.Dataset.range(NUM_IDS).shuffle(
      NUM_IDS, seed=SHUFFLE_SEED, reshuffle_each_iteration=True).repeat()
  return dataset.map(lambda i: (i, i % 2)).batch(batch_size,
                                                 drop_remainder=True)


def ids_input_fn(params):
  return ids_dataset(params['batch_size'])


def expected_ids(steps):
  """The ids each of `steps` steps reads in one uninterrupted run."""
  with tf.Graph().as_default():
    batch = v1.data.make_one_shot_iterator(
        ids_dataset(BATCH_SIZE)).get_next()[0]
    with v1.Session() as session:
      return np.array([session.run(batch) for _ in range(steps)]).reshape(
          [steps, BATCH_SIZE])


def listed_checkpoints(model_dir):
  """(prefix, global step) of every checkpoint model_dir's checkpoint state
  lists, each loaded whole (every tensor but the input position read),
  oldest first. Raises what a checkpoint that does not load raises.

  A save cut short may leave partial files behind; only the checkpoints
  the state file names have to load."""
  found = []
  state = v1.train.get_checkpoint_state(model_dir)
  for prefix in (state.all_model_checkpoint_paths if state else []):
    reader = v1.train.NewCheckpointReader(prefix)
    for key in reader.get_variable_to_shape_map():
      if not is_input_position_key(key):
        reader.get_tensor(key)
    found.append((prefix, int(reader.get_tensor('global_step'))))
  return found


def failing_input_fn(params):
  """Batch FAULT_STEP fails in the input pipeline."""
  def batch(i):
    check = tf.debugging.Assert(i < FAULT_STEP, ['input failed at batch', i])
    with tf.control_dependencies([check]):
      ids = tf.fill([params['batch_size']], i % NUM_IDS)
    return ids, ids % 2
  return tf.data.Dataset.range(10 ** 6).map(batch)


def finite_ids_input_fn(params):
  """STRESS_EPOCHS epochs of the ids, for evaluation and prediction."""
  return tf.data.Dataset.range(NUM_IDS * STRESS_EPOCHS).map(
      lambda i: (i % NUM_IDS, i % 2)).batch(params['batch_size'])


def model_fn(features, labels, mode, params):
  """One weight per id; records which ids each step consumed in the
  ids_by_step variable (row = the global step when the step began)."""
  weights = v1.get_variable('w', [NUM_IDS], initializer=v1.zeros_initializer())
  if mode == he.ModeKeys.PREDICT:
    return he.HookEstimatorSpec(
        mode, predictions={'predicted': tf.gather(weights, features)})
  if mode == he.ModeKeys.EVAL:
    loss = tf.reduce_mean(tf.square(tf.gather(weights, features) -
                                    tf.cast(labels, tf.float32)))
    return he.HookEstimatorSpec(mode, loss=loss)
  ids_by_step = v1.get_variable('ids_by_step', [RECORDED_STEPS, BATCH_SIZE],
                                tf.int64, initializer=v1.zeros_initializer(),
                                trainable=False)
  if params.get('ballast'):
    v1.get_variable('ballast', [params['ballast']], trainable=False,
                    initializer=v1.ones_initializer())
  global_step = v1.train.get_global_step()
  step = global_step.read_value()
  if params.get('model_error'):
    check = tf.debugging.Assert(step < FAULT_STEP, ['model failed at step',
                                                    step])
    with tf.control_dependencies([check]):
      features = tf.identity(features)
  predicted = tf.gather(weights, features)
  loss = tf.reduce_mean(tf.square(predicted - tf.cast(labels, tf.float32)))
  if params.get('nan_loss'):
    loss *= tf.where(step >= FAULT_STEP, np.float32(np.nan), np.float32(1))
  with tf.control_dependencies([step]):
    record = v1.scatter_update(
        ids_by_step, [tf.minimum(step, RECORDED_STEPS - 1)], [features])
    train_op = tf.group(
        v1.train.GradientDescentOptimizer(0.1).minimize(
            loss, global_step=global_step), record)

  def host_call(loss, step):
    check = tf.debugging.Assert(
        tf.logical_or(not params.get('host_call_error'),
                      step[0] < FAULT_STEP),
        ['host_call failed at step', step])
    with tf.control_dependencies([check]):
      return {'loss_copy': tf.identity(loss[0])}
  return he.HookEstimatorSpec(
      mode=mode, loss=loss, train_op=train_op,
      host_call=(host_call, [tf.reshape(loss, [1]), tf.reshape(step, [1])]))


class Announce(v1.train.SessionRunHook):
  """Reports the starting step and that training is under way; can slow
  each loop down."""

  def __init__(self, loop_sleep=0.0):
    self._loop_sleep = loop_sleep
    self._loops = 0

  def after_create_session(self, session, coord):
    emit('start', step=int(session.run(v1.train.get_global_step())))

  def after_run(self, run_context, run_values):
    self._loops += 1
    if self._loops == 1:
      emit('training')
    time.sleep(self._loop_sleep)


class QueueProbe(v1.train.SessionRunHook):
  """Records whether the feeding queues were closed when the training
  session closed (after train() failed there is no session left to ask)."""

  def __init__(self):
    self.closed = None

  def begin(self):
    queues = [op for op in v1.get_default_graph().get_operations()
              if op.type in ('FIFOQueueV2', 'FIFOQueue')]
    self._names = [op.name for op in queues]
    self._is_closed = [tf.raw_ops.QueueIsClosedV2(handle=op.outputs[0])
                       for op in queues]

  def after_create_session(self, session, coord):
    close = session.close

    def close_and_record():
      self.closed = dict(zip(self._names,
                             [bool(c) for c in session.run(self._is_closed)]))
      close()
    session.close = close_and_record


def live_threads():
  """Threads other than the main one and TensorFlow's event writer's."""
  return sorted(t.name for t in threading.enumerate()
                if t is not threading.main_thread() and
                type(t).__name__ != '_EventLoggerThread')


def estimator(model_dir, params=None, iterations_per_loop=2, save_steps=2,
              feeding=None):
  config = he.RunConfig(model_dir=model_dir,
                        iterations_per_loop=iterations_per_loop,
                        save_checkpoints_steps=save_steps, feeding=feeding)
  return he.HookEstimator(model_fn, config=config, params=params,
                          train_batch_size=BATCH_SIZE,
                          eval_batch_size=BATCH_SIZE,
                          predict_batch_size=BATCH_SIZE)


ERROR_CASES = {
    'input_error': dict(input_fn=failing_input_fn),
    'model_error': dict(params={'model_error': True}),
    'host_call_error': dict(params={'host_call_error': True}),
    'hook_error': dict(hooks=[FailingHook(4)]),
    'nan_loss': dict(params={'nan_loss': True}),
}


def run_errors(model_dir, cases, feeding):
  for name in cases:
    case = ERROR_CASES[name]
    probe = QueueProbe()
    est = estimator(os.path.join(model_dir, name), case.get('params'),
                    feeding=feeding)
    start = time.monotonic()
    try:
      est.train(case.get('input_fn', ids_input_fn), steps=1000,
                hooks=[probe] + case.get('hooks', []))
      outcome = dict(type=None, message='train() returned')
    except Exception as error:  # pylint: disable=broad-except
      outcome = dict(type=type(error).__name__, message=str(error))
    emit('error', case=name, seconds=time.monotonic() - start,
         threads=live_threads(), queues_closed=probe.closed, **outcome)


def kill_self_during_a_write(model_dir):
  """SIGKILLs this process once a checkpoint exists and the next one is
  being written (its temporary files have appeared)."""
  def watch():
    while True:
      names = os.listdir(model_dir) if os.path.isdir(model_dir) else []
      if 'checkpoint' in names and any('_temp' in n for n in names):
        os.kill(os.getpid(), signal.SIGKILL)
      time.sleep(0.0002)
  thread = threading.Thread(target=watch, name='KillDuringWrite')
  thread.daemon = True
  thread.start()


def run_train(args):
  params = {'ballast': args.ballast} if args.ballast else None
  est = estimator(args.model_dir, params, args.iterations_per_loop,
                  args.save_steps, args.feeding)
  if args.kill_during_write:
    kill_self_during_a_write(args.model_dir)
  try:
    est.train(ids_input_fn, max_steps=args.max_steps,
              hooks=[Announce(args.loop_sleep)])
  except he.TrainingInterrupted as stop:
    emit('interrupted', step=stop.step, checkpoint=stop.checkpoint,
         code=stop.code, threads=live_threads())
    raise
  emit('done', step=int(est.get_variable_value('global_step')),
       threads=live_threads())


def run_stress(args):
  """One short run of args.mode; a TrainingInterrupted exits with its code
  after the `interrupted` event."""
  est = estimator(args.model_dir, None, args.iterations_per_loop,
                  args.save_steps, args.feeding)
  try:
    if args.mode == 'train':
      est.train(ids_input_fn, max_steps=args.max_steps)
    elif args.mode == 'train_and_evaluate':
      est.train_and_evaluate(ids_input_fn, finite_ids_input_fn,
                             max_steps=args.max_steps,
                             eval_every_steps=max(args.max_steps // 2, 1))
    elif args.mode == 'evaluate':
      est.evaluate(finite_ids_input_fn)
    else:
      for _ in est.predict(finite_ids_input_fn):
        pass
  except he.TrainingInterrupted as stop:
    emit('interrupted', step=stop.step, checkpoint=stop.checkpoint,
         code=stop.code)
    raise
  emit('done', step=est.checkpoint_step())


def robust_signals():
  """SIGINT raises KeyboardInterrupt even when this process was started
  with it ignored; SIGUSR1 dumps every thread's stack."""
  signal.signal(signal.SIGINT, signal.default_int_handler)
  faulthandler.register(signal.SIGUSR1, all_threads=True)


def main(argv=None):
  robust_signals()
  parser = argparse.ArgumentParser()
  parser.add_argument('command', choices=['errors', 'train', 'stress'])
  parser.add_argument('model_dir')
  parser.add_argument('--cases', default=','.join(sorted(ERROR_CASES)))
  parser.add_argument('--max-steps', type=int, default=10 ** 6)
  parser.add_argument('--iterations-per-loop', type=int, default=2)
  parser.add_argument('--save-steps', type=int, default=2)
  parser.add_argument('--ballast', type=int, default=0)
  parser.add_argument('--loop-sleep', type=float, default=0.0)
  parser.add_argument('--kill-during-write', action='store_true')
  parser.add_argument('--feeding', choices=FEEDING_PATHS, default=None)
  parser.add_argument('--mode', choices=STRESS_MODES, default='train')
  args = parser.parse_args(argv)
  v1.logging.set_verbosity(v1.logging.ERROR)
  if args.command == 'errors':
    run_errors(args.model_dir, args.cases.split(','), args.feeding)
  elif args.command == 'stress':
    emit('ready')
    run_stress(args)
  else:
    run_train(args)


if __name__ == '__main__':
  main()
