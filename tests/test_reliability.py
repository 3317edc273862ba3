"""Reliability: limits, faults, shutdown, restarts and CURVE security, on real servers."""
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from bert_serving.client import BertClient, BertRequestError

from conftest import ServerProcess, free_port

TOLERANCE = 1e-5


def sentences(count, tag):
    return ['%s sentence %d with a few extra words %s' % (tag, i, 'x ' * (i % 9))
            for i in range(count)]


def raw_request(bc, frames):
    """Send raw frames from a BertClient's socket and return the request id to wait for."""
    bc.request_id += 1
    bc.pending_request.add(bc.request_id)
    bc.sender.send_multipart(frames(bc.identity, b'%d' % bc.request_id))
    return bc.request_id


def test_request_over_sentence_limit_rejected(client):
    with pytest.raises(BertRequestError, match='more than the maximum of 50000'):
        client.encode(['s'] * 100_000)
    assert client.encode(['still serving']).shape == (1, 384)


def test_ten_megabyte_string_is_truncated(server, client):
    start = time.monotonic()
    with server.client() as other:
        vectors = client.encode(['word ' * 2_000_000])
        assert time.monotonic() - start < 60
        assert vectors.shape == (1, 384)
        assert other.encode(['meanwhile']).shape == (1, 384)


def test_wrong_frame_count_gets_error(client):
    req_id = raw_request(client, lambda identity, rid: [identity, b'["a"]', rid])
    with pytest.raises(BertRequestError, match='expected 4 frames'):
        client._recv_ndarray(req_id)


@pytest.fixture(scope='module')
def small_limits_server():
    process = ServerProcess('-max_request_sentences', '100', '-max_queue_sentences', '50',
                            '-max_batch_size', '4', '-max_msg_mb', '1', '-job_timeout', '3')
    yield process
    process.stop()


def test_flag_limits_request_size(small_limits_server):
    with small_limits_server.client() as bc:
        with pytest.raises(BertRequestError, match='-max_request_sentences'):
            bc.encode(sentences(101, 'big'))
        assert bc.encode(sentences(3, 'fine')).shape == (3, 384)


def test_full_queue_answers_server_busy(small_limits_server):
    with small_limits_server.client() as first, small_limits_server.client() as second:
        first.encode(sentences(48, 'first'), blocking=False)
        with pytest.raises(BertRequestError, match='server busy') as caught:
            second.encode(sentences(48, 'second'))
        assert caught.value.error_type == 'server_busy'
        assert first.fetch_all(concat=True).shape == (48, 384)
        assert second.encode(sentences(2, 'later')).shape == (2, 384)


def test_oversized_message_checked_by_client(small_limits_server):
    with small_limits_server.client() as bc:
        with pytest.raises(ValueError, match='at most 1.0 MB'):
            bc.encode(['y' * (2 * 2 ** 20)])


def test_oversized_message_dropped_by_server(small_limits_server):
    with small_limits_server.client(ignore_all_checks=True, timeout=3000) as bc:
        with pytest.raises(TimeoutError):
            bc.encode(['y' * (2 * 2 ** 20)])
    with small_limits_server.client() as other:
        assert other.encode(['unharmed']).shape == (1, 384)


def test_results_of_vanished_client_dropped(small_limits_server):
    bc = small_limits_server.client()
    bc.encode(sentences(20, 'vanish'), blocking=False)
    bc.close()
    with small_limits_server.client() as watcher:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            sink = watcher.server_status['sink']
            if sink.get('num_dropped_reply', 0) >= 1 and sink['num_held_reply'] == 0:
                break
            time.sleep(0.5)
        assert sink['num_dropped_reply'] >= 1
        assert sink['num_held_reply'] == 0
        assert sink['num_pending_job'] == 0


def test_worker_killed_mid_job_recovers():
    server = ServerProcess('-max_batch_size', '8')
    try:
        with server.client() as bc:
            old_pid = bc.server_status['process_pids']['WORKER-0']
            texts = sentences(1500, 'crash')
            bc.encode(texts, blocking=False)
            time.sleep(1.5)
            os.kill(old_pid, signal.SIGKILL)
            result = bc.fetch_all(concat=True)
            assert result.shape == (1500, 384)
            new_pid = bc.server_status['process_pids']['WORKER-0']
            assert new_pid != old_pid
            again = bc.encode(texts[:200])
            assert np.abs(result[:200] - again).max() < TOLERANCE
        assert 'WORKER-0 exited unexpectedly' in server.log
    finally:
        server.stop()


def test_sigterm_drains_in_flight_requests():
    server = ServerProcess('-max_batch_size', '16')
    bc = server.client()
    try:
        bc.encode(sentences(600, 'drain'), blocking=False)
        time.sleep(0.5)
        server.process.send_signal(signal.SIGTERM)
        result = bc.fetch_all(concat=True)
        assert result.shape == (600, 384)
        assert server.wait_exit(60) == 0
        assert 'stopping: finishing' in server.log
    finally:
        bc.close()
        server.stop()


def test_client_survives_server_restart():
    port, port_out = free_port(), free_port()
    first = ServerProcess(port=port, port_out=port_out)
    bc = BertClient(ip='127.0.0.1', port=port, port_out=port_out, timeout=20_000)
    try:
        expected = bc.encode(['before the restart'])
        first.stop()
        second = ServerProcess(port=port, port_out=port_out)
        try:
            try:
                got = bc.encode(['before the restart'])
            except TimeoutError:
                got = bc.encode(['before the restart'])
            assert np.abs(got - expected).max() < TOLERANCE
        finally:
            second.stop()
    finally:
        bc.close()


def test_ip_flag_binds_loopback_only(server):
    listening = set()
    with open('/proc/net/tcp') as f:
        for line in f.readlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == '0A':  # LISTEN
                address, port = local.split(':')
                listening.add((address, int(port, 16)))
    assert ('0100007F', server.port) in listening
    assert ('0100007F', server.port_out) in listening
    assert ('00000000', server.port) not in listening


@pytest.fixture(scope='module')
def curve_keys(tmp_path_factory):
    directory = tmp_path_factory.mktemp('keys')
    subprocess.run([sys.executable, '-c', 'from bert_serving.server.cli import keygen; keygen()',
                    str(directory), '-names', 'server', 'client', 'stranger'], check=True)
    allowed = directory / 'allowed'
    allowed.mkdir()
    shutil.copy(directory / 'client.key', allowed / 'client.key')
    return directory


@pytest.fixture(scope='module')
def curve_server(curve_keys):
    process = ServerProcess('-curve_secret_key', str(curve_keys / 'server.key_secret'),
                            '-curve_allowed_keys', str(curve_keys / 'allowed'))
    yield process
    process.stop()


def test_curve_known_client_served(curve_server, curve_keys):
    with curve_server.client(curve_server_key=str(curve_keys / 'server.key'),
                             curve_client_key=str(curve_keys / 'client.key_secret')) as bc:
        assert bc.encode(['secret sentence']).shape == (1, 384)


def test_curve_unknown_client_rejected(curve_server, curve_keys):
    with pytest.raises(TimeoutError):
        curve_server.client(curve_server_key=str(curve_keys / 'server.key'),
                            curve_client_key=str(curve_keys / 'stranger.key_secret'),
                            timeout=3000)
    assert 'rejected a client with unknown CURVE public key' in curve_server.log


def test_curve_plain_client_gets_nothing(curve_server):
    with pytest.raises(TimeoutError):
        curve_server.client(timeout=2000)


def test_curve_terminate_needs_key(curve_keys):
    server = ServerProcess('-curve_secret_key', str(curve_keys / 'server.key_secret'),
                           '-curve_allowed_keys', str(curve_keys / 'allowed'))
    try:
        terminate = [sys.executable, '-c',
                     'from bert_serving.server.cli import terminate; terminate()',
                     '-ip', '127.0.0.1', '-port', str(server.port), '-timeout', '2000']
        subprocess.run(terminate, capture_output=True, timeout=60)
        time.sleep(2)
        assert server.process.poll() is None
        subprocess.run(terminate + ['-curve_server_key', str(curve_keys / 'server.key'),
                                    '-curve_client_key', str(curve_keys / 'client.key_secret')],
                       check=True, capture_output=True, timeout=60)
        assert server.wait_exit(60) == 0
    finally:
        server.stop()
