"""Batching and compute options on a real server: coalescing, XLA buckets, bfloat16."""
import threading

import numpy as np
import pytest

from conftest import ServerProcess

TOLERANCE = 1e-5


def test_concurrent_requests_coalesce(server, client):
    sentences = ['coalesce number %d %s' % (i, 'word ' * (i % 5)) for i in range(48)]
    expected = {s: client.encode([s])[0] for s in sentences}
    before = dict(client.server_status['batch_size_histogram'])
    results = {}

    def encode(chunk):
        with server.client() as bc:
            for s in chunk:
                results[s] = bc.encode([s])[0]

    threads = [threading.Thread(target=encode, args=(sentences[i::16],)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)

    after = client.server_status['batch_size_histogram']
    merged = sum(after.get(k, 0) - before.get(k, 0) for k in after if k != '1')
    assert merged > 0, after
    for s in sentences:
        assert np.abs(results[s] - expected[s]).max() < TOLERANCE


@pytest.fixture(scope='module')
def xla_server():
    process = ServerProcess('-xla', '-max_batch_size', '16', '-max_seq_len', '64')
    yield process
    process.stop()


def test_xla_compiles_buckets_at_start(xla_server, reference):
    sentences, expected = reference
    assert 'XLA compiled' in xla_server.log
    with xla_server.client() as bc:
        got = bc.encode(sentences)
        for size in (1, 3, 7, 16, 40):
            assert bc.encode(sentences[:1] * size).shape == (size, 384)
    assert np.abs(got - expected).max() < TOLERANCE
    assert 'unexpected batch shape' not in xla_server.log


def test_bf16_close_to_float32(reference):
    sentences, expected = reference
    server = ServerProcess('-bf16')
    try:
        with server.client() as bc:
            got = bc.encode(sentences)
    finally:
        server.stop()
    assert 'bfloat16' in server.log
    cosine = np.sum(got * expected, axis=1)
    assert cosine.min() > 0.999
