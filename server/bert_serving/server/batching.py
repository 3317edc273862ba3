"""Jobs and batches: how sentences are grouped into forward passes.

A request is cut into jobs of sentences of similar length: sentences are sorted by token
count, and a job closes when it reaches -max_batch_size sentences or when its padded size
(sentences x padded length) would pass -max_batch_tokens. Each job is padded only to a
bucket length just above its own longest sentence, so that a short sentence never pays for
a long one and the set of shapes the workers see stays small.

When a worker has credit for more work, the scheduler merges queued jobs, from any requests and any
clients, into one batch under the same two limits. The batch travels as one message; the
worker runs one forward pass and sends each job's rows to the sink separately.

    batch message:  [JOB, batch id, header, input_ids, segment_ids, lengths,
                     (client, request id, part, rows) for each job in the batch]
"""
import json
from dataclasses import dataclass
from typing import List, Sequence

import numpy as np

# Fine steps for short sentences, coarser ones above; the caller caps them at its limit.
_LENGTH_BUCKETS = (8, 16, 24, 32, 40, 48, 64, 80, 96, 128, 160, 192, 256, 320, 384, 448, 512)
# XLA compiles one executable per shape, so it gets fewer, coarser buckets.
_XLA_LENGTH_BUCKETS = (16, 32, 64, 128, 256, 512)


def length_buckets(limit: int, coarse=False) -> List[int]:
    """Return the padded lengths in use for sequences of at most `limit` tokens, ascending."""
    buckets = [b for b in (_XLA_LENGTH_BUCKETS if coarse else _LENGTH_BUCKETS) if b < limit]
    return buckets + [limit]


def bucket_length(length: int, buckets: Sequence[int]) -> int:
    """Return the smallest bucket that fits `length` tokens."""
    for bucket in buckets:
        if length <= bucket:
            return bucket
    raise ValueError('sequence of %d tokens is longer than the largest bucket %d'
                     % (length, buckets[-1]))


def batch_size_buckets(max_batch_size: int) -> List[int]:
    """Return the padded batch sizes used with XLA: powers of 4 below the maximum, then it."""
    sizes, size = [], 1
    while size < max_batch_size:
        sizes.append(size)
        size *= 4
    return sizes + [max_batch_size]


@dataclass
class Job:
    """Some sentences of one request, padded to one bucket length.

    input_ids and segment_ids are int32 [rows, width]; lengths is int32 [rows].
    """
    client: bytes
    req_id: bytes
    part: int
    input_ids: np.ndarray
    segment_ids: np.ndarray
    lengths: np.ndarray
    attempts: int = 0
    queued_at: float = 0.0  # time.monotonic() when it entered the queue

    @property
    def num_rows(self):
        return len(self.lengths)

    @property
    def width(self):
        return self.input_ids.shape[1]

    @property
    def key(self):
        return self.client, self.req_id, self.part


def cut_into_jobs(client, req_id, input_ids: Sequence[Sequence[int]],
                  segment_ids: Sequence[Sequence[int]], max_batch_size: int,
                  max_batch_tokens: int, buckets: Sequence[int]):
    """Sort sentences by length and cut them into jobs.

    Returns:
        (jobs, order): the jobs, and the original index of each row of the concatenated
        jobs, or None when the rows kept their original order (a single job).
    """
    lengths = np.fromiter((len(ids) for ids in input_ids), dtype=np.int32, count=len(input_ids))
    order = np.argsort(lengths, kind='stable')
    chunks, current, current_width = [], [], 0
    for row in order:
        width = bucket_length(int(lengths[row]), buckets)
        if current and (len(current) == max_batch_size
                        or (len(current) + 1) * max(width, current_width) > max_batch_tokens):
            chunks.append(current)
            current, current_width = [], 0
        current.append(row)
        current_width = max(current_width, width)
    chunks.append(current)

    jobs = []
    for part, rows in enumerate(chunks):
        width = bucket_length(int(lengths[rows[-1]]), buckets)
        ids_array = np.zeros((len(rows), width), dtype=np.int32)
        segments_array = np.zeros((len(rows), width), dtype=np.int32)
        for i, row in enumerate(rows):
            ids_array[i, :lengths[row]] = input_ids[row]
            segments_array[i, :lengths[row]] = segment_ids[row]
        jobs.append(Job(client, req_id, part, ids_array, segments_array, lengths[rows]))

    if len(jobs) == 1:
        # One job: put its rows back in request order, so the sink need not reorder.
        restore = np.argsort(order, kind='stable')
        job = jobs[0]
        job.input_ids, job.segment_ids = job.input_ids[restore], job.segment_ids[restore]
        job.lengths = job.lengths[restore]
        return jobs, None
    return jobs, order


def merge_jobs(jobs: List[Job]):
    """Stack jobs into one batch.

    Returns:
        (input_ids, segment_ids, lengths): int32 arrays [rows, max width], [rows, max width]
        and [rows], in job order.
    """
    if len(jobs) == 1:
        return jobs[0].input_ids, jobs[0].segment_ids, jobs[0].lengths
    width = max(job.width for job in jobs)
    rows = sum(job.num_rows for job in jobs)
    input_ids = np.zeros((rows, width), dtype=np.int32)
    segment_ids = np.zeros((rows, width), dtype=np.int32)
    start = 0
    for job in jobs:
        input_ids[start:start + job.num_rows, :job.width] = job.input_ids
        segment_ids[start:start + job.num_rows, :job.width] = job.segment_ids
        start += job.num_rows
    return input_ids, segment_ids, np.concatenate([job.lengths for job in jobs])


def batch_frames(batch_id: bytes, jobs: List[Job]) -> list:
    """Return the frames of a batch message, after the JOB word (see the module docstring)."""
    input_ids, segment_ids, lengths = merge_jobs(jobs)
    header = json.dumps({'shape': list(input_ids.shape)}).encode()
    frames = [batch_id, header, input_ids, segment_ids, lengths]
    for job in jobs:
        frames += [job.client, job.req_id, b'%d' % job.part, b'%d' % job.num_rows]
    return frames


def parse_batch_frames(frames):
    """Split a batch message (without the JOB word) into arrays and job segments.

    Returns:
        (batch_id, input_ids, segment_ids, lengths, segments), where segments lists
        (client, request id, part, rows) in row order.
    """
    batch_id, header, ids_frame, segments_frame, lengths_frame = frames[:5]
    shape = json.loads(header)['shape']
    input_ids = np.frombuffer(ids_frame, dtype=np.int32).reshape(shape)
    segment_ids = np.frombuffer(segments_frame, dtype=np.int32).reshape(shape)
    lengths = np.frombuffer(lengths_frame, dtype=np.int32)
    tail = frames[5:]
    if len(tail) % 4:
        raise ValueError('batch message has %d segment frames, not a multiple of 4' % len(tail))
    segments = [(tail[i], tail[i + 1], tail[i + 2], int(tail[i + 3]))
                for i in range(0, len(tail), 4)]
    if sum(s[3] for s in segments) != shape[0]:
        raise ValueError('batch segments cover %d rows but the batch has %d'
                         % (sum(s[3] for s in segments), shape[0]))
    return batch_id, input_ids, segment_ids, lengths, segments
