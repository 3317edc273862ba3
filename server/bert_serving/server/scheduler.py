"""The ventilator's job queue: priorities, worker credit, and the batches each worker holds.

Workers announce credit (how many batches they may hold at once) and return one unit with
each finished batch. Jobs wait here, not in socket buffers. So a small request queued after
a large one still goes out first, queued jobs of different requests merge into one batch,
and the jobs of a worker that dies are known and can be sent again.
"""
import itertools
import time
from collections import deque
from typing import Callable, Dict, List

from .batching import Job


class JobScheduler:
    """Args:
        max_batch_size, max_batch_tokens: limits of a merged batch (sentences, and
            sentences x padded length).
        coalesce_wait: seconds a batch smaller than max_batch_size may wait for more jobs
            while a worker is free; 0 sends at once.
    """

    def __init__(self, max_batch_size=256, max_batch_tokens=8192, coalesce_wait=0.0):
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.coalesce_wait = coalesce_wait
        self.high_priority = deque()
        self.normal_priority = deque()
        self.credit: Dict[str, int] = {}
        self.in_flight: Dict[str, Dict[bytes, List[Job]]] = {}
        self.queued_sentences = 0
        self._batch_ids = itertools.count()

    @property
    def num_queued_jobs(self):
        return len(self.high_priority) + len(self.normal_priority)

    @property
    def num_in_flight_jobs(self):
        return sum(len(jobs) for batches in self.in_flight.values() for jobs in batches.values())

    @property
    def is_idle(self):
        return not self.num_queued_jobs and not self.num_in_flight_jobs

    @property
    def ready_workers(self):
        return list(self.credit)

    def add_worker(self, name: str, credit: int):
        self.credit[name] = credit
        self.in_flight[name] = {}

    def remove_worker(self, name: str) -> List[Job]:
        """Forget a worker and return the jobs it held."""
        self.credit.pop(name, None)
        return [job for jobs in self.in_flight.pop(name, {}).values() for job in jobs]

    def submit(self, jobs: List[Job], high_priority: bool):
        now = time.monotonic()
        for job in jobs:
            job.queued_at = now
        (self.high_priority if high_priority else self.normal_priority).extend(jobs)
        self.queued_sentences += sum(job.num_rows for job in jobs)

    def resubmit_first(self, job: Job):
        """Put a job back at the head of the queue, ahead of everything else."""
        self.high_priority.appendleft(job)
        self.queued_sentences += job.num_rows

    def complete(self, name: str, batch_id: bytes) -> List[Job]:
        """Return one unit of credit to `name` and the jobs of its finished batch."""
        if name in self.credit:
            self.credit[name] += 1
        return self.in_flight.get(name, {}).pop(batch_id, [])

    def _peek(self):
        return (self.high_priority or self.normal_priority or [None])[0]

    def _pop(self):
        job = (self.high_priority or self.normal_priority).popleft()
        self.queued_sentences -= job.num_rows
        return job

    def _fits(self, jobs, job):
        rows = sum(j.num_rows for j in jobs) + job.num_rows
        width = max([j.width for j in jobs] + [job.width])
        return rows <= self.max_batch_size and rows * width <= self.max_batch_tokens

    def _should_wait(self):
        """Return True to hold a small batch back for a moment, so that more jobs can join it."""
        if self.coalesce_wait <= 0:
            return False
        queued_rows = sum(j.num_rows for j in itertools.chain(self.high_priority,
                                                               self.normal_priority))
        oldest = min(j.queued_at for j in itertools.chain(self.high_priority,
                                                           self.normal_priority))
        return (queued_rows < self.max_batch_size
                and time.monotonic() - oldest < self.coalesce_wait)

    def dispatch(self, send: Callable[[str, bytes, List[Job]], None]):
        """Hand queued jobs to workers with credit, merged into batches, high priority first."""
        for name in self.credit:
            while self.credit[name] > 0 and self._peek() is not None:
                if self._should_wait():
                    return
                jobs = [self._pop()]
                while self._peek() is not None and self._fits(jobs, self._peek()):
                    jobs.append(self._pop())
                batch_id = b'%d' % next(self._batch_ids)
                send(name, batch_id, jobs)
                self.in_flight[name][batch_id] = jobs
                self.credit[name] -= 1

    def take_all(self) -> List[Job]:
        """Remove and return every queued and in-flight job."""
        jobs = list(self.high_priority) + list(self.normal_priority)
        for batches in self.in_flight.values():
            for held in batches.values():
                jobs.extend(held)
            batches.clear()
        self.high_priority.clear()
        self.normal_priority.clear()
        self.queued_sentences = 0
        return jobs
