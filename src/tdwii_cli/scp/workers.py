"""Threads that are started once and reused: a fixed pool for short steps, and a pool for
long jobs that grows to a maximum and lets idle threads go.

Starting a thread costs more than a whole association's upper layer; these keep
the threads (bounded) instead. `StepPool(n)` runs `submit(fn, arg)` on one of `n`
threads; `JobThreads(name)` runs each `start(fn, arg)` on an idle thread, or a new
one, and a thread idle for `idle_exit` seconds ends.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

Job = tuple[Callable[[Any], None], Any]


class StepPool:
    """`n` threads taking short jobs from one queue."""

    def __init__(self, n: int, name: str) -> None:
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}-{i}", daemon=True) for i in range(n)
        ]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, arg = job
            fn(arg)  # the job catches its own errors

    def submit(self, fn: Callable[[Any], None], arg: Any) -> None:
        self._jobs.put((fn, arg))

    def waiting(self) -> bool:
        """Are jobs waiting for a thread?"""
        return not self._jobs.empty()

    def shutdown(self) -> None:
        """Let the queued jobs run, then end the threads."""
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join(5.0)


class JobThreads:
    """One thread per running job, reused (see the module docstring)."""

    def __init__(self, name: str, idle_exit: float = 2.0) -> None:
        self.name = name
        self.idle_exit = idle_exit
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._count = 0

    def start(self, fn: Callable[[Any], None], arg: Any) -> None:
        """Run `fn(arg)` on an idle thread, or on a new one."""
        with self._lock:
            if self._idle > 0:
                self._idle -= 1
                self._jobs.put((fn, arg))
                return
            self._count += 1
            number = self._count
        thread = threading.Thread(
            target=self._run, args=((fn, arg),), name=f"{self.name}-{number}", daemon=True
        )
        thread.start()

    def _run(self, job: Job) -> None:
        while True:
            fn, arg = job
            fn(arg)  # the job catches its own errors
            with self._lock:
                self._idle += 1
            try:
                taken = self._jobs.get(timeout=self.idle_exit)
            except queue.Empty:
                with self._lock:
                    if self._idle > 0 and self._jobs.empty():
                        self._idle -= 1
                        return
                taken = self._jobs.get()  # a job was handed to us just now
            if taken is None:
                return
            job = taken
