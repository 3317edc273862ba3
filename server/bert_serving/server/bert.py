"""The BERT encoder in TensorFlow 2, built from a dict of Google-named weights.

The forward pass is plain TensorFlow ops on tf.Variables, so it runs eagerly for tests and
inside a `tf.function` in the workers. It follows the BERT paper's post-LayerNorm
Transformer: embeddings (word + position + segment, then LayerNorm), then per layer
multi-head self-attention and a GELU feed-forward block, each with a residual connection
and LayerNorm. Padded positions get an additive attention mask of -10000, so real tokens
never attend to them.
"""
import math
from typing import Dict, List

import numpy as np
import tensorflow as tf

from .model_dir import POOLER_VARIABLES, BertConfig

_ACTIVATIONS = {
    'gelu': lambda x: tf.nn.gelu(x, approximate=False),
    'gelu_new': lambda x: tf.nn.gelu(x, approximate=True),
    'gelu_pytorch_tanh': lambda x: tf.nn.gelu(x, approximate=True),
    'relu': tf.nn.relu,
}


class BertEncoder(tf.Module):
    """A BERT encoder that returns the hidden states of its layers.

    Args:
        config: the model's BertConfig.
        weights: float32 arrays keyed by Google checkpoint name (see `model_dir`).
        use_position_embeddings: False drops position embeddings (-no_position_embeddings).
        compute_dtype: tf.float16 runs the matmuls and embeddings in half precision, while
            LayerNorm, softmax and the returned hidden states stay float32 (-fp16).
    """

    def __init__(self, config: BertConfig, weights: Dict[str, np.ndarray],
                 use_position_embeddings=True, compute_dtype=tf.float32):
        super().__init__(name='bert')
        if config.hidden_act not in _ACTIVATIONS:
            raise ValueError('unsupported hidden_act %r in the model config: supported are %s'
                             % (config.hidden_act, ', '.join(sorted(_ACTIVATIONS))))
        if config.hidden_size % config.num_attention_heads:
            raise ValueError('hidden_size %d is not a multiple of num_attention_heads %d'
                             % (config.hidden_size, config.num_attention_heads))
        self.config = config
        self.activation = _ACTIVATIONS[config.hidden_act]
        self.use_position_embeddings = use_position_embeddings
        self.num_heads = config.num_attention_heads
        self.head_size = config.hidden_size // config.num_attention_heads
        self.compute_dtype = compute_dtype
        # LayerNorm parameters stay float32 because normalization is done in float32.
        self.variables_by_name = {
            name: tf.Variable(value, trainable=False, name=name.replace('/', '.'),
                              dtype=tf.float32 if 'LayerNorm' in name else compute_dtype)
            for name, value in weights.items()}
        self.has_pooler = all(name in weights for name in POOLER_VARIABLES)

    def _var(self, name):
        return self.variables_by_name[name]

    def _layer_norm(self, x, prefix):
        x = tf.cast(x, tf.float32)
        mean, variance = tf.nn.moments(x, axes=[-1], keepdims=True)
        normed = (x - mean) * tf.math.rsqrt(variance + self.config.layer_norm_eps)
        normed = normed * self._var(prefix + '/gamma') + self._var(prefix + '/beta')
        return tf.cast(normed, self.compute_dtype)

    def _dense(self, x, prefix):
        # x: [batch * seq_len, in] -> [batch * seq_len, out]
        return tf.matmul(x, self._var(prefix + '/kernel')) + self._var(prefix + '/bias')

    def embed(self, input_ids, segment_ids):
        """Return the embedding output, float32 [batch, seq_len, hidden]."""
        x = tf.gather(self._var('bert/embeddings/word_embeddings'), input_ids)
        x += tf.gather(self._var('bert/embeddings/token_type_embeddings'), segment_ids)
        if self.use_position_embeddings:
            seq_len = tf.shape(input_ids)[1]
            x += self._var('bert/embeddings/position_embeddings')[tf.newaxis, :seq_len]
        return self._layer_norm(x, 'bert/embeddings/LayerNorm')

    def _attention(self, x, attention_bias, batch, seq_len, prefix):
        # x: [batch * seq_len, hidden]
        def split_heads(t):
            t = tf.reshape(t, [batch, seq_len, self.num_heads, self.head_size])
            return tf.transpose(t, [0, 2, 1, 3])  # [batch, heads, seq_len, head_size]

        query = split_heads(self._dense(x, prefix + '/self/query'))
        key = split_heads(self._dense(x, prefix + '/self/key'))
        value = split_heads(self._dense(x, prefix + '/self/value'))

        scores = tf.cast(tf.matmul(query, key, transpose_b=True), tf.float32)
        probs = tf.nn.softmax(scores / math.sqrt(self.head_size) + attention_bias, axis=-1)
        probs = tf.cast(probs, self.compute_dtype)
        context = tf.matmul(probs, value)  # [batch, heads, seq_len, head_size]
        context = tf.reshape(tf.transpose(context, [0, 2, 1, 3]),
                             [batch * seq_len, self.config.hidden_size])
        return self._dense(context, prefix + '/output/dense')

    def hidden_states(self, input_ids, segment_ids, lengths, num_layers=None) -> List[tf.Tensor]:
        """Run the encoder.

        Args:
            input_ids: int32 [batch, seq_len], padded with anything past `lengths`.
            segment_ids: int32 [batch, seq_len], 0 for the first sentence, 1 for the second.
            lengths: int32 [batch], real tokens per row.
            num_layers: run only the first this many encoder layers (all by default).

        Returns:
            A list of float32 [batch, seq_len, hidden] tensors: the output of encoder layer
            0, 1, ... up to `num_layers` - 1. Padded positions hold unmasked values.
        """
        num_layers = self.config.num_hidden_layers if num_layers is None else num_layers
        batch, seq_len = tf.shape(input_ids)[0], tf.shape(input_ids)[1]
        mask = tf.sequence_mask(lengths, seq_len, dtype=tf.float32)  # [batch, seq_len]
        attention_bias = (1.0 - mask[:, tf.newaxis, tf.newaxis, :]) * -10000.0

        x = tf.reshape(self.embed(input_ids, segment_ids), [batch * seq_len, self.config.hidden_size])
        outputs = []
        for i in range(num_layers):
            prefix = 'bert/encoder/layer_%d' % i
            attended = self._attention(x, attention_bias, batch, seq_len, prefix + '/attention')
            attended = self._layer_norm(attended + x, prefix + '/attention/output/LayerNorm')
            intermediate = self.activation(self._dense(attended, prefix + '/intermediate/dense'))
            x = self._layer_norm(self._dense(intermediate, prefix + '/output/dense') + attended,
                                 prefix + '/output/LayerNorm')
            outputs.append(tf.cast(tf.reshape(x, [batch, seq_len, self.config.hidden_size]),
                                   tf.float32))
        return outputs

    def pooled_output(self, last_layer):
        """Return BERT's pooler output: tanh(dense(first token of the last layer)), [batch, hidden]."""
        first_token = tf.cast(last_layer[:, 0], self.compute_dtype)
        dense = (tf.matmul(first_token, self._var('bert/pooler/dense/kernel'))
                 + self._var('bert/pooler/dense/bias'))
        return tf.tanh(tf.cast(dense, tf.float32))
