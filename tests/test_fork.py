"""os.fork() in a tracking process.

Documented semantics (docs/engine.md): the child inherits the parent's counters and pointer
table as they were at the fork (its heap is a copy of the parent's, so those blocks are
really live there) and goes on counting its own calls; the parent is unaffected.
"""
from __future__ import annotations

import json
import os
import threading
import time
import warnings

import pytest

import alloccount
from alloccount import _testing as T


def run_in_child(body) -> dict:
    """Fork, run body() in the child, return what it returned (as JSON through a pipe)."""
    read_fd, write_fd = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads
        pid = os.fork()
    if pid == 0:  # child
        os.close(read_fd)
        code = 0
        try:
            os.write(write_fd, json.dumps(body()).encode())
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write_fd)
    deadline = time.monotonic() + 30
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung (a lock inherited in the held state?)")
        time.sleep(0.01)
    with os.fdopen(read_fd) as pipe:
        data = pipe.read()
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"child failed: status {status}"
    return json.loads(data)


def test_child_inherits_the_counters_and_keeps_counting(exact):
    keep = bytearray(1_000_000)
    at_fork = alloccount.current_bytes()

    def child():
        start = alloccount.current_bytes()
        blob = bytearray(2_000_000)
        grown = alloccount.current_bytes()
        del blob
        return {"start": start, "grown": grown, "after": alloccount.current_bytes(), "tracking": alloccount.is_tracking()}

    result = run_in_child(child)
    assert result["tracking"]
    assert abs(result["start"] - at_fork) < 200_000, "the child starts from the parent's figures"
    assert 2_000_000 <= result["grown"] - result["start"] < 2_100_000
    assert result["after"] - result["start"] < 100_000
    # the parent is untouched by what the child did
    assert abs(alloccount.current_bytes() - at_fork) < 200_000
    del keep


def test_fork_while_other_threads_allocate_without_the_gil_never_deadlocks(exact):
    stop = threading.Event()

    def hammer():
        while not stop.is_set():
            T.raw_churn_nogil(20_000, 64)

    threads = [threading.Thread(target=hammer) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for _ in range(20):
            result = run_in_child(lambda: T.raw_churn_nogil(1000, 64) == [] and alloccount.stats("raw").allocations)
            assert result > 0
    finally:
        stop.set()
        for t in threads:
            t.join()
    s = alloccount.stats("raw")
    assert s.live_blocks == s.allocations - s.frees >= 0
