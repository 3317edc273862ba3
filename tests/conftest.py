"""Fixtures that run real bert-serving servers on 127.0.0.1 as subprocesses."""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from bert_serving.client import BertClient

DATA_DIR = os.path.join(os.path.dirname(__file__), 'data')
START_TIMEOUT_S = 180


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def child_pids(pid):
    """Return the pids of all live descendants of `pid`, read from /proc."""
    parents = {}
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % entry) as f:
                fields = f.read().rsplit(')', 1)[1].split()
        except OSError:
            continue
        if fields[0] != 'Z':
            parents[int(entry)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


class ServerProcess:
    """A `bert-serving-start` subprocess on free ports, with its log collected."""

    def __init__(self, *flags, wait=True, port=None, port_out=None):
        self.port, self.port_out = port or free_port(), port_out or free_port()
        command = [sys.executable, '-m', 'bert_serving.server.cli', '-ip', '127.0.0.1',
                   '-port', str(self.port), '-port_out', str(self.port_out)] + list(flags)
        env = dict(os.environ, PYTHONUNBUFFERED='1', TF_CPP_MIN_LOG_LEVEL='2')
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        env=env, text=True, encoding='utf-8', errors='replace')
        self.lines = []
        self.ready = threading.Event()
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        if wait:
            self.wait_ready()

    def _read_log(self):
        for line in self.process.stdout:
            self.lines.append(line)
            if 'ready to serve requests' in line:
                self.ready.set()

    @property
    def log(self):
        return ''.join(self.lines)

    def wait_ready(self):
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.ready.wait(0.2):
            if self.process.poll() is not None:
                self._reader.join(5)
                raise RuntimeError('server exited with code %s:\n%s'
                                   % (self.process.returncode, self.log[-5000:]))
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError('server not ready after %ds:\n%s'
                                   % (START_TIMEOUT_S, self.log[-5000:]))

    def client(self, **kwargs):
        kwargs.setdefault('timeout', 120_000)
        return BertClient(ip='127.0.0.1', port=self.port, port_out=self.port_out, **kwargs)

    def wait_exit(self, timeout=60):
        try:
            return self.process.wait(timeout)
        finally:
            self._reader.join(5)

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(5)


@pytest.fixture(scope='session')
def reference():
    with open(os.path.join(DATA_DIR, 'minilm_reference.json'), encoding='utf-8') as f:
        data = json.load(f)
    return data['sentences'], np.array(data['vectors'], dtype=np.float32)


@pytest.fixture(scope='session')
def server():
    """The default model with a small -max_batch_size, so that large requests are split."""
    process = ServerProcess('-max_batch_size', '64')
    yield process
    process.stop()


@pytest.fixture
def client(server):
    with server.client() as bc:
        yield bc
