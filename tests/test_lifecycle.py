"""Start-up checks and shutdown: fast failures on bad input, and no process left behind."""
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ServerProcess, child_pids


def run_start(*flags, timeout=120):
    return subprocess.run([sys.executable, '-m', 'bert_serving.server.cli'] + list(flags),
                          capture_output=True, text=True, timeout=timeout)


def assert_all_gone(pids, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [pid for pid in pids if os.path.exists('/proc/%d' % pid)
                 and not open('/proc/%d/stat' % pid).read().rsplit(')', 1)[1].split()[0] == 'Z']
        if not alive:
            return
        time.sleep(0.2)
    raise AssertionError('processes still running: %s' % alive)


def test_missing_model_dir_fails_fast(tmp_path):
    result = run_start('-model_dir', str(tmp_path / 'nowhere'))
    assert result.returncode != 0
    assert 'not found' in result.stderr
    assert 'nowhere' in result.stderr


def test_model_dir_without_vocab_names_file(tmp_path):
    (tmp_path / 'config.json').write_text('{"vocab_size": 10}')
    result = run_start('-model_dir', str(tmp_path))
    assert result.returncode != 0
    assert 'vocab.txt' in result.stderr


def test_model_dir_without_weights_names_file(tmp_path):
    (tmp_path / 'config.json').write_text('{"vocab_size": 10}')
    (tmp_path / 'vocab.txt').write_text('[PAD]\n[UNK]\n[CLS]\n[SEP]\n')
    result = run_start('-model_dir', str(tmp_path))
    assert result.returncode != 0
    assert 'model.safetensors' in result.stderr


def test_unknown_layout_is_rejected(tmp_path):
    (tmp_path / 'weights.bin').write_bytes(b'\0')
    result = run_start('-model_dir', str(tmp_path))
    assert result.returncode != 0
    assert 'config.json' in result.stderr
    assert 'bert_config.json' in result.stderr


def test_busy_port_fails_with_message():
    first = ServerProcess()
    try:
        result = run_start('-port', str(first.port), '-port_out', '1')
        assert result.returncode != 0
        assert 'cannot bind the request port %d' % first.port in result.stderr
    finally:
        first.stop()


def test_terminate_command_leaves_no_process():
    server = ServerProcess()
    pids = child_pids(server.process.pid)
    assert len(pids) >= 2  # the sink and one worker at least
    result = subprocess.run([sys.executable, '-c',
                             'from bert_serving.server.cli import terminate; terminate()',
                             '-port', str(server.port)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert server.wait_exit(60) == 0
    assert_all_gone(pids | {server.process.pid})


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_every_process(signum):
    server = ServerProcess()
    pids = child_pids(server.process.pid)
    server.process.send_signal(signum)
    assert server.wait_exit(60) == 0
    assert_all_gone(pids | {server.process.pid})


def test_killed_server_takes_children_along():
    server = ServerProcess()
    pids = child_pids(server.process.pid)
    server.process.kill()
    server.wait_exit(30)
    assert_all_gone(pids)


def test_benchmark_writes_table(tmp_path):
    from conftest import free_port
    output = tmp_path / 'benchmark.md'
    result = subprocess.run(
        [sys.executable, '-m', 'bert_serving.server.benchmark', '-port', str(free_port()),
         '-port_out', str(free_port()), '-test_client_batch_size', '1', '8',
         '-test_max_batch_size', '-test_max_seq_len', '-test_num_client', '2',
         '-test_pooling_layer', '-num_repeat', '3', '-max_seq_len', '16',
         '-client_batch_size', '4',
         '-output_file', str(output)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    table = output.read_text()
    assert '| client_batch_size | sentences/s |' in table
    assert '| num_client | sentences/s |' in table
    rows = [line for line in table.splitlines() if line.startswith('| ') and '---' not in line
            and 'sentences/s' not in line]
    assert len(rows) == 3
    assert all(float(row.split('|')[2]) > 0 for row in rows)
