"""The ventilator's job queue: priorities, worker credit, and the jobs each worker holds.

Workers announce credit (how many jobs they may hold at once) and return one unit with
each finished job. Jobs wait here, not in socket buffers, so a small request queued after
a large one still goes out first, and the jobs of a worker that dies are known and can be
sent again.
"""
from collections import deque
from typing import Callable, Dict, List

from .ventilator import Job


class JobScheduler:
    def __init__(self):
        self.high_priority = deque()
        self.normal_priority = deque()
        self.credit: Dict[str, int] = {}
        self.in_flight: Dict[str, Dict[tuple, Job]] = {}
        self.queued_sentences = 0

    @property
    def num_queued_jobs(self):
        return len(self.high_priority) + len(self.normal_priority)

    @property
    def num_in_flight_jobs(self):
        return sum(len(jobs) for jobs in self.in_flight.values())

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
        return list(self.in_flight.pop(name, {}).values())

    def submit(self, jobs: List[Job], high_priority: bool):
        (self.high_priority if high_priority else self.normal_priority).extend(jobs)
        self.queued_sentences += sum(job.num_rows for job in jobs)

    def resubmit_first(self, job: Job):
        """Put a job back at the head of the queue, ahead of everything else."""
        self.high_priority.appendleft(job)
        self.queued_sentences += job.num_rows

    def complete(self, name: str, key: tuple):
        """Return one unit of credit to `name` and the finished job, or None if unknown."""
        if name in self.credit:
            self.credit[name] += 1
        return self.in_flight.get(name, {}).pop(key, None)

    def dispatch(self, send: Callable[[str, Job], None]):
        """Hand queued jobs to workers with credit, high priority first."""
        for name in self.credit:
            while self.credit[name] > 0 and (self.high_priority or self.normal_priority):
                job = (self.high_priority or self.normal_priority).popleft()
                self.queued_sentences -= job.num_rows
                send(name, job)
                self.in_flight[name][job.key] = job
                self.credit[name] -= 1

    def take_all(self) -> List[Job]:
        """Remove and return every queued and in-flight job."""
        jobs = list(self.high_priority) + list(self.normal_priority)
        for held in self.in_flight.values():
            jobs.extend(held.values())
            held.clear()
        self.high_priority.clear()
        self.normal_priority.clear()
        self.queued_sentences = 0
        return jobs
