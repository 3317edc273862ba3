"""End-to-end tests of the ZeroMQ service with the real all-MiniLM-L6-v2 weights."""
import multiprocessing
import threading

import numpy as np
import pytest
import zmq

from bert_serving.client import BertClient, BertRequestError, ConcurrentBertClient

from conftest import ServerProcess

TOLERANCE = 1e-5


def make_sentences(count, tag):
    """Distinct sentences of varied length, so that length sorting reorders them."""
    words = 'alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu'.split()
    return ['%s %d %s' % (tag, i, ' '.join(words[: (i * 7) % len(words)] * (1 + i % 4)))
            for i in range(count)]


def test_encode_matches_sentence_transformers(client, reference):
    sentences, expected = reference
    vectors = client.encode(sentences)
    assert vectors.shape == expected.shape
    assert vectors.dtype == np.float32
    assert np.abs(vectors - expected).max() < TOLERANCE


def test_encode_readme_example(client):
    vectors = client.encode(['First do it', 'then do it right', '今天天气很好'])
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(vectors[0], vectors[2])


def test_large_request_keeps_order(client):
    sentences = make_sentences(1000, 'order')
    together = client.encode(sentences)
    assert together.shape == (1000, 384)

    for sentence in sentences:
        client.encode([sentence], blocking=False)
    alone = client.fetch_all(sort=True, concat=True)
    assert alone.shape == (1000, 384)
    assert np.abs(together - alone).max() < TOLERANCE


def test_output_fmt_list(server, reference):
    sentences, expected = reference
    with server.client(output_fmt='list') as bc:
        vectors = bc.encode(sentences[:2])
    assert isinstance(vectors, list)
    assert np.abs(np.array(vectors) - expected[:2]).max() < TOLERANCE


def test_fetch_yields_every_request(client):
    batches = [make_sentences(n, 'fetch%d' % n) for n in (1, 5, 70)]
    for batch in batches:
        client.encode(batch, blocking=False)
    responses = sorted(client.fetch(), key=lambda r: r.id)
    assert [r.embedding.shape[0] for r in responses] == [1, 5, 70]
    assert client.fetch_all() is None


def test_encode_async_generator(client):
    batches = [make_sentences(4, 'async%d' % i) for i in range(5)]
    results = list(client.encode_async(iter(batches)))
    assert len(results) == 5
    assert all(r.embedding.shape == (4, 384) for r in results)


def _encode_in_thread(server, sentences, results, index):
    with server.client() as bc:
        results[index] = bc.encode(sentences)


def test_concurrent_clients_in_threads(server, client):
    inputs = [make_sentences(10 + i, 'thread%d' % i) for i in range(8)]
    expected = [client.encode(s) for s in inputs]
    results = [None] * 8
    threads = [threading.Thread(target=_encode_in_thread, args=(server, inputs[i], results, i))
               for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for got, want in zip(results, expected):
        assert got is not None
        assert got.shape == want.shape
        assert np.abs(got - want).max() < TOLERANCE


def _encode_in_process(port, port_out, sentences, queue):
    with BertClient(ip='127.0.0.1', port=port, port_out=port_out, timeout=120_000) as bc:
        queue.put((sentences[0], bc.encode(sentences)))


def test_concurrent_clients_in_processes(server, client):
    context = multiprocessing.get_context('spawn')
    queue = context.Queue()
    inputs = [make_sentences(5 + i, 'process%d' % i) for i in range(8)]
    processes = [context.Process(target=_encode_in_process,
                                 args=(server.port, server.port_out, s, queue)) for s in inputs]
    for p in processes:
        p.start()
    results = dict(queue.get(timeout=180) for _ in processes)
    for p in processes:
        p.join(30)
    for sentences in inputs:
        want = client.encode(sentences)
        assert np.abs(results[sentences[0]] - want).max() < TOLERANCE


def test_invalid_request_gets_error_while_others_work(server, client):
    good = make_sentences(200, 'busy')
    expected = client.encode(good)
    results = []

    def keep_encoding():
        with server.client() as bc:
            for _ in range(3):
                results.append(bc.encode(good))

    worker = threading.Thread(target=keep_encoding)
    worker.start()

    bad_payloads = [
        (b'not json', b'1', 'not valid JSON'),
        (b'"a string"', b'1', 'expected a JSON list'),
        (b'[]', b'0', 'empty'),
        (b'["ok", 3]', b'2', 'element 1 must be a string'),
        (b'["ok", "   "]', b'2', 'element 1 is empty'),
        (b'[["tok"], "text"]', b'2', 'element 1 must be a list of tokens'),
        (b'["a", "b"]', b'5', 'length frame says 5'),
        (b'["a"]', b'x', 'length frame'),
        (b'\xff\xfe', b'1', 'not UTF-8'),
    ]
    with server.client() as bad:
        for payload, length, message in bad_payloads:
            bad.request_id += 1
            bad.sender.send_multipart([bad.identity, payload, b'%d' % bad.request_id, length])
            bad.pending_request.add(bad.request_id)
            with pytest.raises(BertRequestError, match=message):
                bad._recv_ndarray(bad.request_id)

    worker.join(120)
    assert len(results) == 3
    for got in results:
        assert np.abs(got - expected).max() < TOLERANCE


def test_malformed_frames_are_dropped_without_harm(server, client):
    context = zmq.Context()
    raw = context.socket(zmq.PUSH)
    raw.setsockopt(zmq.LINGER, 1000)
    raw.connect('tcp://127.0.0.1:%d' % server.port)
    raw.send_multipart([b'only-one-frame'])
    raw.send_multipart([b'id', b'["a"]', b'not-a-number', b'1'])
    raw.send_multipart([b'id', b'["a"]', b'1', b'1', b'extra'])
    raw.close()
    context.term()
    assert client.encode(['still serving']).shape == (1, 384)


def test_server_config_keys(client):
    config = client.server_config
    for key in ('server_version', 'max_seq_len', 'pooling_strategy', 'pooling_layer',
                'num_worker', 'max_batch_size', 'port', 'port_out', 'tensorflow_version',
                'python_version', 'pyzmq_version', 'zmq_version', 'server_start_time',
                'device_map', 'show_tokens_to_client', 'embedding_dim'):
        assert key in config, key
    assert config['max_seq_len'] == 256
    assert config['pooling_layer'] == [-1]
    assert config['pooling_strategy'] == 'REDUCE_MEAN'
    assert config['embedding_dim'] == 384


def test_server_status_statistic(client):
    client.encode(['count me'])
    statistic = client.server_status['statistic']
    for key in ('num_data_request', 'num_total_seq', 'num_sys_request', 'num_total_request',
                'num_total_client', 'num_active_client'):
        assert key in statistic, key
    assert statistic['num_data_request'] >= 1


def test_concurrent_client_pool(server):
    with ConcurrentBertClient(max_concurrency=3, ip='127.0.0.1', port=server.port,
                              port_out=server.port_out, timeout=120_000) as pool:
        results = [None] * 6

        def run(i):
            results[i] = pool.encode(['pool %d' % i])

        threads = [threading.Thread(target=run, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert all(r is not None and r.shape == (1, 384) for r in results)

        with pytest.raises(ValueError):
            pool.encode([''])
        assert pool._available.qsize() == 3
        assert pool.server_config['server_version']


@pytest.fixture(scope='module')
def two_worker_server():
    process = ServerProcess('-num_worker', '2', '-max_batch_size', '16')
    yield process
    process.stop()


def test_two_workers_serve(two_worker_server, reference):
    sentences, expected = reference
    with two_worker_server.client() as bc:
        assert bc.server_config['num_ready_worker'] == 2
        vectors = bc.encode(sentences * 10)
    assert np.abs(vectors - np.tile(expected, (10, 1))).max() < TOLERANCE
    log = two_worker_server.log
    assert 'WORKER-0' in log
    assert 'WORKER-1' in log


def test_text_empty_after_cleaning_is_encoded(client):
    # Control characters are removed by tokenization, leaving only [CLS] and [SEP].
    vectors = client.encode(['\x00\x07', 'still fine'])
    assert vectors.shape == (2, 384)
    assert np.all(np.isfinite(vectors))
    assert client.encode(['after that']).shape == (1, 384)


def test_server_status_worker_counters(client):
    client.encode(make_sentences(3, 'counters'))
    status = client.server_status
    worker = status['workers']['WORKER-0']
    assert worker['num_job'] >= 1
    assert worker['num_sentence'] >= 3
    assert worker['busy_seconds'] > 0
    assert sum(status['batch_size_histogram'].values()) >= 1
    assert status['vocab_file'].endswith('vocab.txt')
