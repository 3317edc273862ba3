"""Length bucketing, job cutting and batch merging, without a server."""
import numpy as np
import pytest

from bert_serving.server.batching import (Job, batch_frames, batch_size_buckets, bucket_length,
                                          cut_into_jobs, length_buckets, parse_batch_frames)
from bert_serving.server.scheduler import JobScheduler


def token_lists(lengths):
    return [list(range(1, n + 1)) for n in lengths], [[0] * n for n in lengths]


def test_length_buckets_capped_at_limit():
    assert length_buckets(25) == [8, 16, 24, 25]
    assert length_buckets(256, coarse=True) == [16, 32, 64, 128, 256]
    assert bucket_length(9, length_buckets(25)) == 16
    with pytest.raises(ValueError):
        bucket_length(26, length_buckets(25))


def test_batch_size_buckets():
    assert batch_size_buckets(256) == [1, 4, 16, 64, 256]
    assert batch_size_buckets(10) == [1, 4, 10]


def test_single_job_keeps_request_order():
    ids, segments = token_lists([5, 2, 9])
    jobs, order = cut_into_jobs(b'c', b'1', ids, segments, 16, 10_000, length_buckets(64))
    assert order is None
    assert len(jobs) == 1
    assert jobs[0].lengths.tolist() == [5, 2, 9]
    assert jobs[0].width == 16
    assert jobs[0].input_ids[1].tolist() == [1, 2] + [0] * 14


def test_jobs_respect_size_and_token_limits():
    lengths = [3, 60, 7, 7, 30, 12, 60, 2, 45, 9]
    ids, segments = token_lists(lengths)
    jobs, order = cut_into_jobs(b'c', b'1', ids, segments, 3, 128, length_buckets(64))
    assert sorted(order.tolist()) == list(range(len(lengths)))
    assert sum(job.num_rows for job in jobs) == len(lengths)
    for job in jobs:
        assert job.num_rows <= 3
        assert job.num_rows * job.width <= 128 or job.num_rows == 1
        assert job.width >= job.lengths.max()
    rows = np.concatenate([job.lengths for job in jobs])
    assert rows.tolist() == [lengths[i] for i in order]


def test_batch_frames_round_trip():
    first = Job(b'a', b'1', 0, np.ones((2, 8), np.int32), np.zeros((2, 8), np.int32),
                np.array([8, 3], np.int32))
    second = Job(b'b', b'7', 2, np.full((1, 16), 5, np.int32), np.ones((1, 16), np.int32),
                 np.array([16], np.int32))
    frames = [bytes(memoryview(f)) for f in batch_frames(b'42', [first, second])]
    batch_id, input_ids, segment_ids, lengths, segments = parse_batch_frames(frames)
    assert batch_id == b'42'
    assert input_ids.shape == (3, 16)
    assert input_ids[0].tolist() == [1] * 8 + [0] * 8
    assert lengths.tolist() == [8, 3, 16]
    assert segments == [(b'a', b'1', b'0', 2), (b'b', b'7', b'2', 1)]


def make_job(client, rows, width):
    return Job(client, b'1', 0, np.zeros((rows, width), np.int32),
               np.zeros((rows, width), np.int32), np.full(rows, width, np.int32))


def test_scheduler_merges_queued_jobs():
    scheduler = JobScheduler(max_batch_size=8, max_batch_tokens=1000)
    scheduler.add_worker('W', 1)
    scheduler.submit([make_job(b'a', 2, 16), make_job(b'b', 3, 16)], high_priority=False)
    scheduler.submit([make_job(b'c', 4, 16)], high_priority=False)
    sent = []
    scheduler.dispatch(lambda name, batch_id, jobs: sent.append([j.client for j in jobs]))
    assert sent == [[b'a', b'b']]  # the third job would pass max_batch_size
    assert scheduler.num_queued_jobs == 1
    jobs = scheduler.complete('W', b'0')
    assert [j.client for j in jobs] == [b'a', b'b']
    scheduler.dispatch(lambda name, batch_id, jobs: sent.append([j.client for j in jobs]))
    assert sent[-1] == [b'c']


def test_scheduler_high_priority_first():
    scheduler = JobScheduler(max_batch_size=1, max_batch_tokens=1000)
    scheduler.add_worker('W', 1)
    scheduler.submit([make_job(b'large', 1, 8)], high_priority=False)
    scheduler.submit([make_job(b'small', 1, 8)], high_priority=True)
    sent = []
    scheduler.dispatch(lambda name, batch_id, jobs: sent.append(jobs[0].client))
    assert sent == [b'small']


def test_scheduler_waits_to_coalesce():
    scheduler = JobScheduler(max_batch_size=8, max_batch_tokens=1000, coalesce_wait=60)
    scheduler.add_worker('W', 1)
    scheduler.submit([make_job(b'a', 1, 8)], high_priority=False)
    sent = []
    scheduler.dispatch(lambda name, batch_id, jobs: sent.append(jobs))
    assert sent == []
    scheduler.submit([make_job(b'b', 7, 8)], high_priority=False)
    scheduler.dispatch(lambda name, batch_id, jobs: sent.append([j.client for j in jobs]))
    assert sent == [[b'a', b'b']]


def test_scheduler_returns_jobs_of_removed_worker():
    scheduler = JobScheduler(max_batch_size=8, max_batch_tokens=1000)
    scheduler.add_worker('W', 1)
    scheduler.submit([make_job(b'a', 2, 8), make_job(b'b', 2, 8)], high_priority=False)
    scheduler.dispatch(lambda *args: None)
    assert scheduler.num_in_flight_jobs == 2
    assert {j.client for j in scheduler.remove_worker('W')} == {b'a', b'b'}
    assert scheduler.is_idle
