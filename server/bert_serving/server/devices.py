"""Assign workers to GPUs or to the CPU, and split the CPU cores between CPU workers."""
import logging
import os
from typing import List


def list_available_gpus(logger: logging.Logger) -> List[int]:
    """Return the ids of GPUs with free memory, or [] when there are none or GPUtil cannot tell."""
    try:
        import GPUtil
    except Exception as error:  # GPUtil imports distutils, which Python 3.12 dropped
        logger.warning('GPUtil cannot be imported (%s), so no GPU is used', error)
        return []
    try:
        return GPUtil.getAvailable(order='memory', limit=16, maxLoad=0.9, maxMemory=0.9)
    except Exception as error:  # raised when nvidia-smi is missing or fails
        logger.info('no GPU found (%s)', error)
        return []


def assign_devices(num_worker: int, use_cpu: bool, device_map: List[int],
                   available_gpus: List[int], logger: logging.Logger) -> List[int]:
    """Return one device id per worker: a GPU id, or -1 for the CPU.

    With -device_map the given ids are used in turn (repeated when there are more workers
    than ids); otherwise free GPUs are used in turn. Without any GPU every worker runs on
    the CPU.
    """
    if use_cpu:
        return [-1] * num_worker
    gpus = list(device_map) or list(available_gpus)
    if not gpus:
        logger.warning('no GPU available, so all %d worker(s) run on the CPU', num_worker)
        return [-1] * num_worker
    if num_worker > len(gpus):
        logger.warning('%d workers share %d GPU(s); they may run out of GPU memory',
                       num_worker, len(gpus))
    return [gpus[i % len(gpus)] for i in range(num_worker)]


def cpu_threads_per_worker(num_cpu_workers: int) -> int:
    """Split the cores this process may use evenly between the CPU workers (at least 1 each)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, num_cpu_workers))
