"""Layers built from tf.compat.v1.get_variable, shared by the models.

They run unchanged on TF 1.15 and 2.x (no tf.layers, no Keras).
"""
import math

import tensorflow as tf

v1 = tf.compat.v1


def dense(inputs, units, name, activation=None, stddev=None, seed=None):
  """inputs [..., d] -> [..., units]; Glorot init unless stddev is given,
  drawn with `seed` (None: at random)."""
  with v1.variable_scope(name):
    initializer = (v1.glorot_uniform_initializer(seed=seed) if stddev is None
                   else v1.random_normal_initializer(stddev=stddev, seed=seed))
    kernel = v1.get_variable('kernel', [inputs.shape[-1], units],
                             initializer=initializer)
    bias = v1.get_variable('bias', [units], initializer=v1.zeros_initializer())
    outputs = tf.tensordot(inputs, kernel, 1) + bias
  return activation(outputs) if activation else outputs


def layer_norm(inputs, name, epsilon=1e-5):
  """Normalises the last axis, with a learned scale and offset."""
  with v1.variable_scope(name):
    depth = inputs.shape[-1]
    scale = v1.get_variable('scale', [depth], initializer=v1.ones_initializer())
    offset = v1.get_variable('offset', [depth],
                             initializer=v1.zeros_initializer())
    mean, variance = tf.nn.moments(inputs, [-1], keepdims=True)
    return (inputs - mean) * v1.rsqrt(variance + epsilon) * scale + offset


def gelu(x):
  """The tanh approximation of GELU, as in GPT-2."""
  return 0.5 * x * (1.0 + tf.tanh(
      math.sqrt(2.0 / math.pi) * (x + 0.044715 * tf.pow(x, 3))))
