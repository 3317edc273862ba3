"""Client-side behaviour that needs no model: input checks, timeouts, fork safety."""
import multiprocessing
import os

import pytest

from bert_serving.client import BertClient

from conftest import free_port


@pytest.fixture
def offline_client():
    bc = BertClient(ip='127.0.0.1', port=free_port(), port_out=free_port(),
                    ignore_all_checks=True, timeout=300)
    yield bc
    bc.close()


@pytest.mark.parametrize('texts, error, message', [
    ('a string', TypeError, 'must be a list of strings, but got str'),
    ([], ValueError, 'empty list'),
    (['ok', 7], TypeError, r'texts\[1\] must be a string, but got int'),
    (['ok', '  '], ValueError, r'texts\[1\] must be a non-empty string'),
    ([None], TypeError, r'texts\[0\]'),
])
def test_encode_rejects_bad_input(offline_client, texts, error, message):
    with pytest.raises(error, match=message):
        offline_client.encode(texts)


def test_bad_input_message_is_short(offline_client):
    with pytest.raises(TypeError) as caught:
        offline_client.encode(['fine', b'x' * 100_000])
    assert len(str(caught.value)) < 200


@pytest.mark.parametrize('texts, message', [
    ([['a'], 'b'], r'texts\[1\] must be a list of token strings'),
    ([['a'], []], r'texts\[1\] must be a non-empty list'),
    ([['a', 3]], r'texts\[0\]\[1\]'),
])
def test_encode_tokenized_rejects_bad_input(offline_client, texts, message):
    with pytest.raises((TypeError, ValueError), match=message):
        offline_client.encode(texts, is_tokenized=True)


def test_timeout_names_address_and_ports(offline_client):
    with pytest.raises(TimeoutError) as caught:
        offline_client.encode(['nobody listens'])
    message = str(caught.value)
    assert '300 ms' in message
    assert 'tcp://127.0.0.1:%d' % offline_client.port in message
    assert 'tcp://127.0.0.1:%d' % offline_client.port_out in message


def test_constructor_checks_time_out():
    with pytest.raises(TimeoutError):
        BertClient(ip='127.0.0.1', port=free_port(), port_out=free_port(), timeout=200)


def test_invalid_output_fmt():
    with pytest.raises(ValueError, match='output_fmt'):
        BertClient(output_fmt='csv', ignore_all_checks=True)


def _use_after_fork(bc, queue):
    try:
        bc.encode(['from the child'])
        queue.put('no error')
    except RuntimeError as error:
        queue.put(str(error))


@pytest.mark.skipif(not hasattr(os, 'fork'), reason='needs fork')
def test_use_after_fork_raises(offline_client):
    context = multiprocessing.get_context('fork')
    queue = context.Queue()
    child = context.Process(target=_use_after_fork, args=(offline_client, queue))
    child.start()
    message = queue.get(timeout=30)
    child.join(30)
    assert 'after fork' in message


def test_status_reports_client_state(offline_client):
    status = offline_client.status
    assert status['port'] == offline_client.port
    assert status['num_request'] == 0
    assert status['timeout'] == 300
