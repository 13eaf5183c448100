"""The web integrations' one-runtime-per-process holder: built once under a lock, shared
by threads, built again in a forked child, stopped by ``close``. No service needed."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from abstractruntime_celery.contrib.process import ProcessRuntime


class FakeRuntime:
    stopped = False

    def stop(self) -> None:
        self.stopped = True


def test_many_threads_asking_at_once_get_one_runtime_built_once() -> None:
    built: list[int] = []

    def slow() -> Any:
        time.sleep(0.05)  # two unlocked builds would both get in here
        built.append(1)
        return FakeRuntime()

    holder = ProcessRuntime(slow)
    barrier = threading.Barrier(16)
    got: list[Any] = []

    def ask() -> None:
        barrier.wait()
        got.append(holder.get())

    threads = [threading.Thread(target=ask) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 16 and all(g is got[0] for g in got)
    assert built == [1] and holder.builds == 1 and holder.built


def test_a_forked_child_builds_its_own_and_close_stops_it() -> None:
    holder = ProcessRuntime(FakeRuntime)
    parents = holder.get()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave without running pytest's teardown
        try:
            mine = holder.get()
            os.write(write, b"ok" if mine is not parents and holder.builds == 1 else b"shared")
        finally:
            os._exit(0)
    os.close(write)
    answer = os.read(read, 16)
    os.waitpid(pid, 0)
    os.close(read)
    assert answer == b"ok"
    assert holder.get() is parents
    holder.close()
    assert parents.stopped and not holder.built and holder.get() is not parents
