"""A trainable Keras BERT built from the server's dict of Google-named weights, with its heads.

The forward pass is the same post-LayerNorm Transformer as `bert.BertEncoder`, plus dropout
during training. Every variable keeps its Google checkpoint name in `variables_by_name`
(`bert/encoder/layer_0/attention/self/query/kernel`, `cls/predictions/output_bias`,
`output_weights`, ...), so `named_weights()` can be written as a TF1 checkpoint that the
server and Google's BERT scripts read.

Dropout draws from stateless random ops seeded by (seed, step), so a run that resumes from
a checkpoint takes the same steps as one that was never interrupted.
"""
import math
from typing import Dict, Optional

import keras
import numpy as np
import tensorflow as tf

from ..model_dir import POOLER_VARIABLES, BertConfig

INITIALIZER_RANGE = 0.02

# Google names of the masked-LM head (run_pretraining.py get_masked_lm_output).
MLM_VARIABLES = ['cls/predictions/transform/dense/kernel', 'cls/predictions/transform/dense/bias',
                 'cls/predictions/transform/LayerNorm/gamma',
                 'cls/predictions/transform/LayerNorm/beta', 'cls/predictions/output_bias']
# Google names of the next-sentence head (run_pretraining.py get_next_sentence_output).
NSP_VARIABLES = ['cls/seq_relationship/output_weights', 'cls/seq_relationship/output_bias']
# Google names of the classifier (run_classifier.py create_model).
CLASSIFIER_VARIABLES = ['output_weights', 'output_bias']

_ACTIVATIONS = {
    'gelu': lambda x: tf.nn.gelu(x, approximate=False),
    'gelu_new': lambda x: tf.nn.gelu(x, approximate=True),
    'gelu_pytorch_tanh': lambda x: tf.nn.gelu(x, approximate=True),
    'relu': tf.nn.relu,
}


def truncated_normal(shape, rng: np.random.Generator):
    """Return float32 values from N(0, 0.02) cut at two standard deviations, as BERT initializes."""
    values = rng.standard_normal(shape)
    while True:
        outside = np.abs(values) > 2
        if not outside.any():
            break
        values[outside] = rng.standard_normal(int(outside.sum()))
    return (values * INITIALIZER_RANGE).astype(np.float32)


def mlm_head_weights(config: BertConfig, rng: np.random.Generator) -> Dict[str, np.ndarray]:
    hidden = config.hidden_size
    return {
        'cls/predictions/transform/dense/kernel': truncated_normal((hidden, hidden), rng),
        'cls/predictions/transform/dense/bias': np.zeros(hidden, np.float32),
        'cls/predictions/transform/LayerNorm/gamma': np.ones(hidden, np.float32),
        'cls/predictions/transform/LayerNorm/beta': np.zeros(hidden, np.float32),
        'cls/predictions/output_bias': np.zeros(config.vocab_size, np.float32),
    }


def nsp_head_weights(config: BertConfig, rng: np.random.Generator) -> Dict[str, np.ndarray]:
    return {'cls/seq_relationship/output_weights': truncated_normal((2, config.hidden_size), rng),
            'cls/seq_relationship/output_bias': np.zeros(2, np.float32)}


def classifier_weights(config: BertConfig, num_labels: int,
                       rng: np.random.Generator) -> Dict[str, np.ndarray]:
    return {'output_weights': truncated_normal((num_labels, config.hidden_size), rng),
            'output_bias': np.zeros(num_labels, np.float32)}


def pooler_weights(config: BertConfig, rng: np.random.Generator) -> Dict[str, np.ndarray]:
    """Return a freshly initialized pooler, for models saved without one."""
    return {'bert/pooler/dense/kernel': truncated_normal((config.hidden_size,) * 2, rng),
            'bert/pooler/dense/bias': np.zeros(config.hidden_size, np.float32)}


class TrainableBert(keras.Model):
    """BERT with trainable variables named as in Google's checkpoints, and optional heads.

    Args:
        config: the model's BertConfig.
        weights: float32 arrays keyed by Google name: the encoder (`bert/...`, pooler
            included) and any heads (`cls/...`, `output_weights`, `output_bias`).
        dropout: the dropout rate of hidden states and attention probabilities in training.
        seed: the integer that, with the step, seeds every dropout mask.
    """

    def __init__(self, config: BertConfig, weights: Dict[str, np.ndarray], dropout=0.1, seed=0):
        super().__init__(name='bert_model')
        if config.hidden_act not in _ACTIVATIONS:
            raise ValueError('unsupported hidden_act %r in the model config: supported are %s'
                             % (config.hidden_act, ', '.join(sorted(_ACTIVATIONS))))
        missing = [name for name in POOLER_VARIABLES if name not in weights]
        if missing:
            raise ValueError('the weights lack the pooler (%s)' % ', '.join(missing))
        self.config = config
        self.activation = _ACTIVATIONS[config.hidden_act]
        self.num_heads = config.num_attention_heads
        self.head_size = config.hidden_size // config.num_attention_heads
        self.dropout_rate = float(dropout)
        self.seed = int(seed)
        self.variables_by_name = {}
        for name in sorted(weights):
            value = np.asarray(weights[name], dtype=np.float32)
            # Keras rejects '/' in variable names; the dict keeps the Google name.
            variable = self.add_weight(name=name.replace('/', '.'), shape=value.shape,
                                       initializer='zeros', dtype='float32')
            variable.assign(value)
            self.variables_by_name[name] = variable

    def has(self, name):
        return name in self.variables_by_name

    def named_weights(self) -> Dict[str, np.ndarray]:
        """Return every variable as a float32 array keyed by its Google checkpoint name."""
        return {name: variable.numpy() for name, variable in self.variables_by_name.items()}

    def _var(self, name):
        return self.variables_by_name[name]

    def _layer_norm(self, x, prefix):
        mean, variance = tf.nn.moments(x, axes=[-1], keepdims=True)
        normed = (x - mean) * tf.math.rsqrt(variance + self.config.layer_norm_eps)
        return normed * self._var(prefix + '/gamma') + self._var(prefix + '/beta')

    def _dense(self, x, prefix):
        return tf.matmul(x, self._var(prefix + '/kernel')) + self._var(prefix + '/bias')

    def _dropout(self, x, seed, salt, training):
        if not training or self.dropout_rate == 0:
            return x
        return tf.nn.experimental.stateless_dropout(
            x, self.dropout_rate, seed=tf.random.experimental.stateless_fold_in(seed, salt))

    def encode(self, input_ids, segment_ids, lengths, step=0, training=False):
        """Run the encoder.

        Args:
            input_ids, segment_ids: int32 [batch, seq_len], padded past `lengths`.
            lengths: int32 [batch], real tokens per row.
            step: the training step, which seeds the dropout masks with the model's seed.

        Returns:
            (sequence_output [batch, seq_len, hidden], pooled_output [batch, hidden]).
        """
        seed = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(step, tf.int64)])
        hidden = self.config.hidden_size
        batch, seq_len = tf.shape(input_ids)[0], tf.shape(input_ids)[1]
        mask = tf.sequence_mask(lengths, seq_len, dtype=tf.float32)
        attention_bias = (1.0 - mask[:, tf.newaxis, tf.newaxis, :]) * -10000.0

        x = tf.gather(self._var('bert/embeddings/word_embeddings'), input_ids)
        x += tf.gather(self._var('bert/embeddings/token_type_embeddings'), segment_ids)
        x += self._var('bert/embeddings/position_embeddings')[tf.newaxis, :seq_len]
        x = self._layer_norm(x, 'bert/embeddings/LayerNorm')
        x = self._dropout(x, seed, 0, training)
        x = tf.reshape(x, [batch * seq_len, hidden])

        def split_heads(t):
            t = tf.reshape(t, [batch, seq_len, self.num_heads, self.head_size])
            return tf.transpose(t, [0, 2, 1, 3])

        for i in range(self.config.num_hidden_layers):
            prefix = 'bert/encoder/layer_%d' % i
            salt = 10 * (i + 1)
            query = split_heads(self._dense(x, prefix + '/attention/self/query'))
            key = split_heads(self._dense(x, prefix + '/attention/self/key'))
            value = split_heads(self._dense(x, prefix + '/attention/self/value'))
            scores = tf.matmul(query, key, transpose_b=True) / math.sqrt(self.head_size)
            probs = tf.nn.softmax(scores + attention_bias, axis=-1)
            probs = self._dropout(probs, seed, salt + 1, training)
            context = tf.reshape(tf.transpose(tf.matmul(probs, value), [0, 2, 1, 3]),
                                 [batch * seq_len, hidden])
            attended = self._dropout(self._dense(context, prefix + '/attention/output/dense'),
                                     seed, salt + 2, training)
            attended = self._layer_norm(attended + x, prefix + '/attention/output/LayerNorm')
            intermediate = self.activation(self._dense(attended, prefix + '/intermediate/dense'))
            output = self._dropout(self._dense(intermediate, prefix + '/output/dense'),
                                   seed, salt + 3, training)
            x = self._layer_norm(output + attended, prefix + '/output/LayerNorm')

        sequence_output = tf.reshape(x, [batch, seq_len, hidden])
        pooled = tf.tanh(self._dense(sequence_output[:, 0], 'bert/pooler/dense'))
        return sequence_output, pooled

    def masked_lm_logits(self, sequence_output, positions):
        """Return vocabulary logits [batch, num_positions, vocab] at the masked positions.

        The decoder is the transposed word-embedding matrix plus `cls/predictions/output_bias`.
        """
        gathered = tf.gather(sequence_output, positions, batch_dims=1)
        batch, count = tf.shape(positions)[0], tf.shape(positions)[1]
        flat = tf.reshape(gathered, [-1, self.config.hidden_size])
        transformed = self.activation(self._dense(flat, 'cls/predictions/transform/dense'))
        transformed = self._layer_norm(transformed, 'cls/predictions/transform/LayerNorm')
        logits = tf.matmul(transformed, self._var('bert/embeddings/word_embeddings'),
                           transpose_b=True) + self._var('cls/predictions/output_bias')
        return tf.reshape(logits, [batch, count, self.config.vocab_size])

    def next_sentence_logits(self, pooled):
        """Return [batch, 2] logits; class 0 means sentence B follows A, 1 means B is random."""
        return (tf.matmul(pooled, self._var('cls/seq_relationship/output_weights'),
                          transpose_b=True) + self._var('cls/seq_relationship/output_bias'))

    def classifier_logits(self, pooled, step=0, training=False):
        """Return [batch, num_labels] logits of the classifier on the pooled output."""
        seed = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(step, tf.int64)])
        pooled = self._dropout(pooled, seed, 7, training)
        return tf.matmul(pooled, self._var('output_weights'), transpose_b=True) + self._var(
            'output_bias')


def build_model(config: BertConfig, base_weights: Dict[str, np.ndarray],
                heads: Dict[str, np.ndarray], dropout: float, seed: int,
                logger=None) -> TrainableBert:
    """Build the trainable model from the encoder weights and the head weights.

    A model saved without a pooler (some sentence-transformers exports) gets a new one.
    """
    weights = dict(base_weights)
    if not all(name in weights for name in POOLER_VARIABLES):
        if logger:
            logger.warning('the model has no pooler, so a new one is initialized at random')
        weights.update(pooler_weights(config, np.random.default_rng(seed + 1)))
    weights.update(heads)
    return TrainableBert(config, weights, dropout=dropout, seed=seed)


def read_head_weights(checkpoint_prefix: Optional[str], names) -> Dict[str, np.ndarray]:
    """Read the head variables `names` from a Google checkpoint, when it has all of them."""
    if not checkpoint_prefix:
        return {}
    reader = tf.train.load_checkpoint(checkpoint_prefix)
    shapes = reader.get_variable_to_shape_map()
    if not all(name in shapes for name in names):
        return {}
    return {name: reader.get_tensor(name).astype(np.float32) for name in names}
