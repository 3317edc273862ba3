"""Pooling: turn the hidden states of the chosen layers into one vector per sentence.

Every strategy is mask-aware: padded positions never enter a mean or a max, and a row
with no position left to pool (possible with -mask_cls_sep) pools to zeros rather than
dividing by zero. Several layers are pooled one by one and concatenated in the order given.
"""
from dataclasses import dataclass
from typing import Sequence

import tensorflow as tf

from .bert import BertEncoder
from .helper import PoolingStrategy

# Strategies that pick one token; -mask_cls_sep does not apply to them.
_TOKEN_STRATEGIES = (PoolingStrategy.FIRST_TOKEN, PoolingStrategy.LAST_TOKEN)


@dataclass
class PoolingConfig:
    strategy: PoolingStrategy
    layers: Sequence[int]  # encoder layer indices, negative ones counted from the end
    mask_cls_sep: bool = False
    normalize: bool = False
    cls_id: int = 101
    sep_id: int = 102


def _masked_mean(states, mask):
    # states: [batch, seq_len, hidden]; mask: [batch, seq_len] float32 of 0/1
    summed = tf.reduce_sum(states * mask[:, :, tf.newaxis], axis=1)
    counts = tf.reduce_sum(mask, axis=1, keepdims=True)
    return tf.math.divide_no_nan(summed, counts)


def _masked_max(states, mask):
    keep = mask[:, :, tf.newaxis] > 0
    maxed = tf.reduce_max(tf.where(keep, states, tf.fill(tf.shape(states), float('-inf'))), axis=1)
    any_kept = tf.reduce_any(keep, axis=1)
    return tf.where(any_kept, maxed, tf.zeros_like(maxed))


def _pool_layer(states, strategy, pool_mask, lengths):
    if strategy == PoolingStrategy.REDUCE_MEAN:
        return _masked_mean(states, pool_mask)
    if strategy == PoolingStrategy.REDUCE_MAX:
        return _masked_max(states, pool_mask)
    if strategy == PoolingStrategy.REDUCE_MEAN_MAX:
        return tf.concat([_masked_mean(states, pool_mask), _masked_max(states, pool_mask)], axis=1)
    if strategy == PoolingStrategy.FIRST_TOKEN:
        return states[:, 0]
    if strategy == PoolingStrategy.LAST_TOKEN:
        return tf.gather(states, lengths - 1, axis=1, batch_dims=1)
    if strategy == PoolingStrategy.NONE:
        return states * pool_mask[:, :, tf.newaxis]
    raise ValueError('unsupported pooling strategy %s' % strategy)


def build_embed_function(encoder: BertEncoder, pooling: PoolingConfig, jit_compile=False):
    """Compile the forward pass plus pooling into one `tf.function`.

    The function takes input_ids and segment_ids (int32 [batch, seq_len]) and lengths
    (int32 [batch]) and returns float32 [batch, dim], or [batch, seq_len, dim] for NONE.
    Its input signature has unknown batch and length, so new shapes do not retrace it.
    """
    num_layers = encoder.config.num_hidden_layers
    layer_indices = [i % num_layers for i in pooling.layers]
    needs_pooler = pooling.strategy == PoolingStrategy.CLS_POOLED
    if needs_pooler and not encoder.has_pooler:
        raise ValueError('-pooling_strategy CLS_POOLED needs the pooler weights '
                         'bert/pooler/dense/kernel and bert/pooler/dense/bias, which this model '
                         'does not have')
    # Layers above the highest pooled one do not change the result, so they are skipped.
    layers_to_run = num_layers if needs_pooler else max(layer_indices) + 1
    mask_special = pooling.mask_cls_sep and pooling.strategy not in _TOKEN_STRATEGIES

    signature = [tf.TensorSpec([None, None], tf.int32, name='input_ids'),
                 tf.TensorSpec([None, None], tf.int32, name='segment_ids'),
                 tf.TensorSpec([None], tf.int32, name='lengths')]

    @tf.function(input_signature=signature, jit_compile=jit_compile)
    def embed(input_ids, segment_ids, lengths):
        states = encoder.hidden_states(input_ids, segment_ids, lengths, layers_to_run)
        if needs_pooler:
            output = encoder.pooled_output(states[-1])
        else:
            pool_mask = tf.sequence_mask(lengths, tf.shape(input_ids)[1], dtype=tf.float32)
            if mask_special:
                special = tf.logical_or(tf.equal(input_ids, pooling.cls_id),
                                        tf.equal(input_ids, pooling.sep_id))
                pool_mask *= 1.0 - tf.cast(special, tf.float32)
            output = tf.concat([_pool_layer(states[i], pooling.strategy, pool_mask, lengths)
                                for i in layer_indices], axis=-1)
        if pooling.normalize:
            output = tf.math.l2_normalize(output, axis=-1, epsilon=1e-12)
        return output

    return embed
