"""Device assignment of workers: GPUs from -device_map or GPUtil, else the CPU."""
import logging
import os
import shutil
import sys

import pytest

from bert_serving.server.devices import assign_devices, cpu_threads_per_worker, list_available_gpus

LOGGER = logging.getLogger('test-devices')


def test_cpu_flag_uses_cpu_for_all():
    assert assign_devices(3, True, [0, 1], [0, 1], LOGGER) == [-1, -1, -1]


def test_device_map_reused_in_turn():
    assert assign_devices(5, False, [2, 0], [0, 1, 2], LOGGER) == [2, 0, 2, 0, 2]


def test_device_map_cut_to_workers():
    assert assign_devices(1, False, [3, 1], [], LOGGER) == [3]


def test_available_gpus_used_without_map():
    assert assign_devices(3, False, [], [1, 0], LOGGER) == [1, 0, 1]


def test_no_gpu_falls_back_to_cpu(caplog):
    with caplog.at_level(logging.WARNING, logger='test-devices'):
        assert assign_devices(2, False, [], [], LOGGER) == [-1, -1]
    assert 'run on the CPU' in caplog.text


def test_gputil_import_failure_means_no_gpu(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, 'GPUtil', None)  # makes "import GPUtil" raise ImportError
    with caplog.at_level(logging.WARNING, logger='test-devices'):
        assert list_available_gpus(LOGGER) == []
    assert 'GPUtil cannot be imported' in caplog.text


@pytest.mark.skipif(shutil.which('nvidia-smi') is not None, reason='this machine has a GPU')
def test_gputil_without_nvidia_smi_means_no_gpu():
    assert list_available_gpus(LOGGER) == []


@pytest.mark.parametrize('workers', [1, 2, 64])
def test_cpu_threads_split_between_workers(workers):
    threads = cpu_threads_per_worker(workers)
    assert threads >= 1
    assert threads * workers <= max(workers, len(os.sched_getaffinity(0)))


@pytest.mark.skipif(shutil.which('nvidia-smi') is not None, reason='this machine has a GPU')
def test_server_log_says_cpu_fallback(server):
    assert 'no GPU available, so all 1 worker(s) run on the CPU' in server.log
