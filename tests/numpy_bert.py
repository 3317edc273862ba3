"""An independent numpy BERT forward pass and pooling, to check the server's numbers.

It reads the Hugging Face parameter names and torch layouts ([out, in] linear weights)
directly, so it shares no weight-mapping or model code with the server.
"""
import math

import numpy as np

_erf = np.vectorize(math.erf, otypes=[np.float64])


def layer_norm(x, gamma, beta, eps=1e-12):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def linear(x, w, name):
    return x @ w[name + '.weight'].T + w[name + '.bias']


def hidden_states(w, config, ids, segments=None, use_positions=True):
    """Return the outputs of every encoder layer for ONE unpadded sentence, each [len, hidden]."""
    w = {k[len('bert.'):] if k.startswith('bert.') else k: v.astype(np.float64)
         for k, v in w.items()}
    ids = np.asarray(ids)
    segments = np.zeros_like(ids) if segments is None else np.asarray(segments)
    x = w['embeddings.word_embeddings.weight'][ids] + w['embeddings.token_type_embeddings.weight'][segments]
    if use_positions:
        x = x + w['embeddings.position_embeddings.weight'][:len(ids)]
    x = layer_norm(x, w['embeddings.LayerNorm.weight'], w['embeddings.LayerNorm.bias'])

    heads = config['num_attention_heads']
    size = config['hidden_size'] // heads
    outputs = []
    for i in range(config['num_hidden_layers']):
        p = 'encoder.layer.%d.' % i
        q = linear(x, w, p + 'attention.self.query').reshape(len(ids), heads, size).transpose(1, 0, 2)
        k = linear(x, w, p + 'attention.self.key').reshape(len(ids), heads, size).transpose(1, 0, 2)
        v = linear(x, w, p + 'attention.self.value').reshape(len(ids), heads, size).transpose(1, 0, 2)
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(size)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        context = (probs @ v).transpose(1, 0, 2).reshape(len(ids), -1)
        attended = layer_norm(linear(context, w, p + 'attention.output.dense') + x,
                              w[p + 'attention.output.LayerNorm.weight'],
                              w[p + 'attention.output.LayerNorm.bias'])
        inner = linear(attended, w, p + 'intermediate.dense')
        inner = 0.5 * inner * (1 + _erf(inner / math.sqrt(2)))
        x = layer_norm(linear(inner, w, p + 'output.dense') + attended,
                       w[p + 'output.LayerNorm.weight'], w[p + 'output.LayerNorm.bias'])
        outputs.append(x)
    return outputs


def pooler(w, last_layer):
    w = {k[len('bert.'):] if k.startswith('bert.') else k: v for k, v in w.items()}
    return np.tanh(last_layer[0] @ w['pooler.dense.weight'].T + w['pooler.dense.bias'])


def pool(states, strategy, keep=None):
    """Pool one sentence's [len, hidden] states; `keep` is a boolean mask of tokens to pool."""
    keep = np.ones(len(states), bool) if keep is None else keep
    if strategy == 'REDUCE_MEAN':
        return states[keep].mean(0) if keep.any() else np.zeros(states.shape[1])
    if strategy == 'REDUCE_MAX':
        return states[keep].max(0) if keep.any() else np.zeros(states.shape[1])
    if strategy == 'REDUCE_MEAN_MAX':
        return np.concatenate([pool(states, 'REDUCE_MEAN', keep), pool(states, 'REDUCE_MAX', keep)])
    if strategy in ('FIRST_TOKEN', 'CLS_TOKEN'):
        return states[0]
    if strategy in ('LAST_TOKEN', 'SEP_TOKEN'):
        return states[-1]
    if strategy == 'NONE':
        return states * keep[:, None]
    raise ValueError(strategy)
