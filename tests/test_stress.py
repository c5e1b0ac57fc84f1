"""Stress tests of the engine itself: it must not crash, hang or lose count under load.

Every scenario runs in a child process (this file run as a script) so that a crash is a
failed test instead of a dead test run, and a hang is killed: the child arms faulthandler to
dump every thread's stack and exit at its deadline, and the parent kills it a little later
as a backstop. The child prints its figures as one JSON line; the parent states the
expectations, so each test below reads as the specification it checks.

Counters are read at quiescent points (every worker parked between two work units, nobody
inside an allocator) with ``_core.read_into``, which allocates nothing, so the invariants
are checked exactly:

* exact mode: ``allocations - frees == engine_info()["tracked_blocks"]`` (every counted
  live block is in the pointer table and nothing else is), and
  ``current_bytes == bytes_allocated - bytes_freed`` per domain and in total;
* after ``stop()`` returns, no figure moves any more, even while threads keep allocating;
* untracked domains count nothing.
"""
from __future__ import annotations

import ctypes
import itertools
import json
import os
import subprocess
import sys
import threading
import time
import traceback
import warnings

import pytest

import alloccount
from alloccount import _core
from alloccount import _testing as T

HERE = os.path.abspath(__file__)
#: A child that has not finished by then dumps its threads' stacks and exits (a hang).
CHILD_DEADLINE_S = 40.0
#: The parent's backstop, for a child so stuck that faulthandler cannot run.
PARENT_TIMEOUT_S = CHILD_DEADLINE_S + 20.0
FIELDS = ("allocations", "frees", "reallocs", "bytes_allocated", "bytes_freed", "current_bytes",
          "peak_bytes", "untracked_frees")


# ==================================================================================== parent


def run_child(scenario: str, **params) -> dict:
    """Run ``scenario(**params)`` in a fresh interpreter; return the dict it produced."""
    cmd = [sys.executable, HERE, scenario, json.dumps(params)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PARENT_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        pytest.fail(f"{scenario}{params} hung: killed after {PARENT_TIMEOUT_S:.0f} s\n{err[-8000:]}")
    if proc.returncode != 0:
        pytest.fail(f"{scenario}{params} exited with status {proc.returncode} "
                    f"(negative: killed by that signal)\n--- stderr ---\n{proc.stderr[-8000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def assert_consistent(figures: dict, where: object = "", *, stale_ok: bool = False) -> None:
    """The exact-mode invariants, on figures produced by read_figures() in a child.

    ``stale_entries == 0`` says that no free of a counted block escaped us. ``stale_ok``
    waives it where frees could not reach us (another tool dropped our hooks for a while)."""
    total = figures["total"]
    assert total["allocations"] - total["frees"] == figures["tracked_blocks"], (where, figures)
    for name in ("total", "raw", "mem", "obj"):
        c = figures[name]
        assert c["current_bytes"] == c["bytes_allocated"] - c["bytes_freed"], (where, name, c)
    assert figures["table_insert_failures"] == 0, (where, figures)
    if not stale_ok:
        assert figures["stale_entries"] == 0, (where, figures)


# ------------------------------------------------------------------- (a) threads without the GIL


def test_native_threads_without_the_gil_lose_no_update_and_reuse_their_slots():
    # GIVEN 8 native threads (no Python thread state, never the GIL: more than the cores, so
    # the spinlock's holder is preempted), each doing RAW malloc/free pairs and keeping 50
    r = run_child("native_threads", nthreads=8, count=40_000, keep=50, size=48, rounds=12)
    n_blocks = 8 * (40_000 + 50)
    for i, rnd in enumerate(r["rounds"]):
        # THEN in every round not one update is lost: the figures are exact
        assert rnd["mid"]["allocations"] == n_blocks, i
        assert rnd["mid"]["bytes_allocated"] == n_blocks * 48, i
        assert rnd["mid"]["frees"] == 8 * 40_000, i
        assert rnd["mid"]["current_bytes"] == 8 * 50 * 48, i
        assert rnd["after"]["frees"] == n_blocks and rnd["after"]["current_bytes"] == 0, i
    # AND a thread's slot is reused once it has exited: 96 threads created in 12 rounds of 8
    # need no more slots than 8 plus the other threads (alive at the end) that allocated
    assert r["slots"] <= 8 + r["other_threads_with_a_slot"]
    assert_consistent(r["final"])


def test_python_and_native_threads_allocating_without_the_gil_keep_the_table_consistent():
    # GIVEN Python threads churning RAW without the GIL (keeping some blocks alive across
    # units, freeing them later), native threads, and a thread allocating Python objects
    r = run_child("mixed_threads", seconds=1.5)
    # THEN at every pause and after the threads are joined the invariants hold exactly
    assert len(r["pauses"]) >= 5
    for i, figures in enumerate(r["pauses"]):
        assert_consistent(figures, f"pause {i}")
    assert_consistent(r["joined"], "joined")
    # AND the work was counted: each RAW unit is 2000 malloc/free pairs
    assert r["joined"]["raw"]["allocations"] >= 2000 * r["raw_units"] > 0
    assert r["joined"]["obj"]["allocations"] >= r["object_units"] > 0


# ----------------------------------------------------- (b) start/stop cycles while threads allocate

SESSIONS = {
    "exact-all": [["exact", "all"]],
    "counts-all": [["counts", "all"]],
    "exact-raw": [["exact", ["raw"]]],
    "mixed": [["exact", ["mem", "obj"]], ["counts", ["raw"]], ["exact", "all"], ["counts", ["obj"]],
              ["exact", ["raw", "obj"]]],
}


@pytest.mark.parametrize("sessions", SESSIONS)
def test_start_stop_cycles_while_threads_allocate(sessions):
    # GIVEN two Python threads churning RAW without the GIL, a native-thread pool, and a
    # thread building Python objects; the main thread cycles start() / stop() while they run
    r = run_child("start_stop_cycles", sessions=SESSIONS[sessions], seconds=1.5)
    assert len(r["cycles"]) >= 10
    for i, c in enumerate(r["cycles"]):
        mode = c["mode"]
        domains = [d for d in ("raw", "mem", "obj") if c["domains"] == "all" or d in c["domains"]]
        # THEN start() tracks what was asked, and the hooks really receive calls
        assert c["is_tracking"] and c["tracking_mode"] == mode and c["tracked_domains"] == domains, (i, c)
        fig = c["paused"]
        if mode == "exact":
            assert_consistent(fig, f"cycle {i}")
        # AND untracked domains count nothing, tracked ones count the work done meanwhile
        for name in ("raw", "mem", "obj"):
            if name not in domains:
                assert fig[name] == dict.fromkeys(FIELDS, 0), (i, name, fig[name])
        if "raw" in domains:
            # units that started and ended inside the session: 2000 RAW allocations each
            assert fig["raw"]["allocations"] >= 2000 * c["raw_units_inside"], (i, c)
        if "obj" in domains:
            assert fig["obj"]["allocations"] >= c["object_units_inside"], (i, c)
        # AND stop() unlinked cleanly (we were on top) and froze every figure while the
        # threads went on allocating
        assert c["stop_warnings"] == [], (i, c)
        assert c["after_stop"] == c["later"], (i, c)
        assert not c["is_tracking_after_stop"], (i, c)
    assert sum(c["raw_units_inside"] for c in r["cycles"]) > 0, "the RAW threads made no progress"


# ------------------------------------------------------------------------- (c) fork under load


def test_fork_under_load_children_work_and_the_parent_stays_consistent():
    # GIVEN threads allocating (RAW without the GIL, Python objects) while the main thread
    # forks children that allocate, start threads of their own and check their figures
    r = run_child("fork_under_load", children=12, seconds=1.0)
    assert len(r["children"]) == 12
    for i, child in enumerate(r["children"]):
        # THEN every child exits 0 (no inherited lock held by a thread that does not exist
        # there), still tracks, counts its own work and its figures are consistent
        assert child["status"] == 0, (i, child)
        assert child["is_tracking"], (i, child)
        assert child["raw_allocations_delta"] >= 3 * 5000, (i, child)
        assert_consistent(child["figures"], f"child {i}")
    # AND the parent's figures are consistent once its threads are joined
    assert_consistent(r["parent"], "parent")


# ------------------------------------------------- (d) stacking with tracemalloc and memray


class Chain:
    """What CPython's allocator chain looks like as the tools start and stop.

    tracemalloc ("T") and memray ("M") save the allocator they find on start and restore it,
    blindly, on stop: whatever sits above them is dropped. alloccount ("A") wraps what it
    finds, and on stop unlinks only when it is on top; otherwise it stays in the chain as a
    pass-through (with a warning) if calls still reach it. Its start() after a stop() reuses
    hooks that calls still reach, and links anew otherwise. "P" is pymalloc at the bottom.
    """

    def __init__(self) -> None:
        self.top = "P"
        self.saved: dict = {}
        self.active: set = set()
        self.dead_tracemalloc_called = False
        # in alloccount's current session: calls bypassed its hooks while it was started
        # (frees it could not see)
        self.a_bypassed = False

    def reached(self) -> list:
        """The hooks that a PyMem/PyObject call goes through, top first."""
        out, x = [], self.top
        while x != "P":
            out.append(x)
            x = self.saved[x]
        return out

    def works(self, tool: str) -> bool:
        return tool in self.active and tool in self.reached()

    def start(self, tool: str) -> None:
        if not (tool == "A" and "A" in self.reached()):
            self.saved[tool], self.top = self.top, tool
        if tool == "A":
            self.a_bypassed = False  # start() resets every figure
        self.active.add(tool)
        self._check()

    def stop(self, tool: str) -> bool:
        """Returns True when alloccount's stop() warns that it stays as a pass-through."""
        self.active.discard(tool)
        warned = False
        if tool != "A" or self.top == "A":
            self.top = self.saved[tool]
        else:
            warned = "A" in self.reached()
        self._check()
        return warned

    def _check(self) -> None:
        # tracemalloc's hooks dereference a buffer that tracemalloc.stop() freed: a chain
        # that reaches them after its stop crashes CPython, with or without alloccount
        # (measured on 3.11: tracemalloc.start, memray enter, tracemalloc.stop, memray exit
        # segfaults in a process that never imported alloccount).
        reached = self.reached()
        if "T" in reached and "T" not in self.active:
            self.dead_tracemalloc_called = True
        if "A" in self.active and "A" not in reached:
            self.a_bypassed = True


def parse(sequence: str) -> list:
    """"+A+T-A-T" -> [("+", "A"), ("+", "T"), ("-", "A"), ("-", "T")]"""
    return [(sequence[i], sequence[i + 1]) for i in range(0, len(sequence), 2)]


def model(sequence: str) -> Chain:
    chain = Chain()
    for op, tool in parse(sequence):
        chain.start(tool) if op == "+" else chain.stop(tool)
    return chain


def stacking_sequences() -> list:
    # Every start order of the three tools times every stop order ...
    seqs = ["".join("+" + t for t in starts) + "".join("-" + t for t in stops)
            for starts in itertools.permutations("ATM") for stops in itertools.permutations("ATM")]
    # ... and interleavings where alloccount restarts: reusing its pass-through hooks under
    # tracemalloc or memray (no double counting), relinking after a tool below it dropped it
    # (is_tracking() says to stop() and start() again), staying dropped while memray runs,
    # reusing the hooks that memray's blind restore put back.
    seqs += ["+A+T-A+A-T-A", "+A+M-A+A-M-A", "+T+A-T-A+A-A", "+T+A-T+M-M-A", "+A+M-A-M+A-A",
             "+M+A-M-A+A+T-T-A"]
    # Leave out the sequences that crash because of tracemalloc and memray alone (Chain._check).
    return [s for s in seqs if not model(s).dead_tracemalloc_called]


STACKING = stacking_sequences()


def test_the_stacking_sequences_cover_every_nesting_of_alloccount():
    # 36 start x stop orders, minus the 9 where tracemalloc stops below a running memray
    # (crashes without us), plus 6 interleavings
    assert len(STACKING) == len(set(STACKING)) == 36 - 9 + 6
    assert model("+T+M-T-M").dead_tracemalloc_called


@pytest.mark.parametrize("sequence", STACKING)
def test_stacking_with_tracemalloc_and_memray(sequence, tmp_path):
    # GIVEN alloccount, tracemalloc and memray (trace_python_allocators=True) started and
    # stopped in this order, a marker buffer allocated after every step
    r = run_child("stacking", sequence=sequence, capture=str(tmp_path / "memray.bin"))
    chain = Chain()
    for i, ((op, tool), step) in enumerate(zip(parse(sequence), r["steps"])):
        warned = chain.start(tool) if op == "+" else chain.stop(tool)
        where = (i, op + tool, chain.reached(), step)
        # THEN alloccount's stop() warns exactly when it has to stay as a pass-through
        if op == "-" and tool == "A":
            assert step["stop_warned"] == bool(warned), where
        # AND is_tracking() tells the truth, and warns when it has to say no while started
        assert step["is_tracking"] == chain.works("A"), where
        assert step["is_tracking_warned"] == ("A" in chain.active and not chain.works("A")), where
        # AND alloccount counts the marker once when its hooks are reached, not at all otherwise
        n = step["marker"] + 1  # bytearray(n - 1) asks realloc(NULL, n) for its buffer
        if chain.works("A"):
            assert n <= step["a_bytes"] < 2 * n, where
            # Stale entries (table entries of blocks freed where we could not see it, retired
            # when their address comes back) are expected only after calls bypassed us.
            assert_consistent(step["figures"], where, stale_ok=chain.a_bypassed)
        elif "A" in chain.active:
            assert step["a_bytes"] == 0, where
        # AND tracemalloc traces it exactly when the chain reaches it
        if "T" in chain.active:
            assert (step["t_traced"] >= n) if chain.works("T") else (step["t_traced"] == 0), where
        # AND memray records it exactly when the chain reaches it (read back from the capture)
        if "M" in chain.active:
            assert step["m_recorded"] == chain.works("M"), where


# ------------------------------------------ frees made by a tool wrapping us, inside our call


def test_frees_by_a_tool_wrapping_us_inside_our_nested_call_are_counted():
    # GIVEN tracemalloc started after us, so it wraps our hooks (the documented order). When a
    # >512-byte object is freed, pymalloc (called by our OBJ hook, guard set) calls
    # PyMem_RawFree(p), which enters the RAW chain at its top: tracemalloc's RAW hook removes
    # the trace of p (the OBJ block has the same address) and frees that 16-byte trace through
    # our RAW hook, a block we counted when tracemalloc allocated it, outside our guard.
    import gc
    import tracemalloc

    if os.environ.get("PYTHONMALLOC", "") in ("malloc", "malloc_debug"):
        pytest.skip("needs pymalloc: with PYTHONMALLOC=malloc no OBJ free calls PyMem_RawFree")
    alloccount.start()
    tracemalloc.start()
    try:
        def work():
            buffers = [bytearray(1000 + i) for i in range(2000)]
            del buffers

        work()
        gc.collect()
        before, stale_before = alloccount.stats(), _core.engine_info()["stale_entries"]
        # WHEN 10,000 such objects are allocated and freed
        for _ in range(5):
            work()
        gc.collect()
        after, stale_after = alloccount.stats(), _core.engine_info()["stale_entries"]
    finally:
        tracemalloc.stop()
        alloccount.stop()
    # THEN every free of a block we counted is counted: no entry outlives its block, and
    # the figures come back to where they were, up to the tools' own bookkeeping (tracemalloc
    # keeps a traceback per new call site; measured 1-5 blocks, 112-168 bytes). Losing these
    # frees left 9,027 blocks and 144 KB that were not live.
    assert stale_after - stale_before == 0
    assert abs(after.live_blocks - before.live_blocks) < 100
    assert abs(after.current_bytes - before.current_bytes) < 4096


# ---------------------------------------------- a RAW realloc in flight across stop() + start()


def test_a_raw_realloc_in_flight_across_a_restart_is_adopted_by_the_new_session():
    # GIVEN a RAW block of 16 MiB tracked in session 1, and a thread reallocating it to 24 MiB
    # without the GIL (a copying realloc: milliseconds) while the main thread restarts tracking
    r = run_child("realloc_across_restart", old=16 << 20, new=24 << 20)
    if not r["straddled"]:
        pytest.skip("the realloc never straddled the restart in 10 attempts (machine too loaded?)")
    s2 = r["session2"]
    # THEN session 2 books it as a block from before its start (docs/engine.md: a realloc of
    # such a block adopts it): an allocation of the new size, the old address an untracked
    # free. (The bug books a resize: no allocation, and new - old = 8 MiB in use.) Other RAW
    # blocks of session 2 (thread teardown) are small: under 1 MiB.
    assert s2["allocations"] - s2["frees"] == r["tracked_blocks"]
    assert 24 << 20 <= s2["current_bytes"] < (24 << 20) + (1 << 20)
    assert s2["untracked_frees"] >= 1


# ===================================================================================== child


def unpack(buf: bytearray) -> dict:
    return dict(zip(FIELDS, memoryview(buf).cast("q").tolist()))


def counters(domain: int) -> dict:
    """One domain's counters (-1: all), read without allocating."""
    buf = bytearray(64)
    _core.read_into(domain, buf)
    return unpack(buf)


def read_counters() -> dict:
    """The counters, per domain and in total."""
    raw, mem, obj, total = (bytearray(64) for _ in range(4))
    _core.read_into(0, raw)
    _core.read_into(1, mem)
    _core.read_into(2, obj)
    _core.read_into(-1, total)
    return {"raw": unpack(raw), "mem": unpack(mem), "obj": unpack(obj), "total": unpack(total)}


def read_figures() -> dict:
    """Every figure the invariants need. Call it with nobody else allocating. The total is read
    last and engine_info() reads the table before building its dict: nothing is allocated or
    freed between the two. (Inline on purpose: a Python-level call or return in between fires
    a profile hook, and memray's allocates.)"""
    raw, mem, obj, total = (bytearray(64) for _ in range(4))
    _core.read_into(0, raw)
    _core.read_into(1, mem)
    _core.read_into(2, obj)
    _core.read_into(-1, total)
    info = _core.engine_info()
    return {"raw": unpack(raw), "mem": unpack(mem), "obj": unpack(obj), "total": unpack(total),
            "tracked_blocks": info["tracked_blocks"], "stale_entries": info["stale_entries"],
            "table_insert_failures": info["table_insert_failures"], "thread_slots": info["thread_slots"]}


class Workers:
    """Threads that allocate in units until closed. pause() parks them all between two units
    (nobody inside an allocator) so that the main thread reads exact figures."""

    def __init__(self, *kinds: str) -> None:
        self.units = [0] * len(kinds)
        self.kinds = kinds
        self._cond = threading.Condition()
        self._paused = False
        self._parked = 0
        self._closed = False
        self._threads = [threading.Thread(target=self._run, args=(i, k), daemon=True) for i, k in enumerate(kinds)]

    def __enter__(self) -> "Workers":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        with self._cond:
            self._closed = True
            self._paused = False
            self._cond.notify_all()
        for t in self._threads:
            t.join()

    def pause(self) -> None:
        with self._cond:
            self._paused = True
            while self._parked < len(self._threads):
                self._cond.wait()

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def units_of(self, kind: str) -> int:
        return sum(u for u, k in zip(self.units, self.kinds) if k == kind)

    def _checkpoint(self) -> bool:
        if self._paused:
            with self._cond:
                self._parked += 1
                self._cond.notify_all()
                while self._paused:
                    self._cond.wait()
                self._parked -= 1
        return not self._closed

    def _run(self, index: int, kind: str) -> None:
        work = WORK[kind]
        state: dict = {}
        while self._checkpoint():
            work(state)
            self.units[index] += 1
        for addresses in state.get("kept", []):
            T.free_many("raw", addresses)


def _raw_nogil(state: dict) -> None:
    # 2000 RAW malloc/free pairs without the GIL, plus 20 blocks kept for a few units (and so
    # often freed in a later session: untracked frees)
    T.raw_churn_nogil(2000, 64)
    kept = state.setdefault("kept", [])
    kept.append(T.raw_churn_nogil(20, 200, keep=20))
    if len(kept) > 5:
        T.free_many("raw", kept.pop(0))


def _native(state: dict) -> None:
    # native threads: no Python thread state at all (their slots come and go)
    buffers = [bytearray(64) for _ in range(3)]
    T.raw_threads(2, 3000, 40, 5, _core.read_into, *buffers)


def _objects(state: dict) -> None:
    # Python-level objects: dicts, strings, lists grown by append (MEM/OBJ reallocs),
    # buffers over 512 bytes (pymalloc calls RAW inside our guard)
    history = state.setdefault("history", [])
    book = {f"px{i}": [i, float(i), str(i) * 3, bytes(600 + i % 7)] for i in range(150)}
    history.append(book)
    if len(history) > 20:
        del history[:10]
    "".join(str(i) for i in range(200))


WORK = {"raw_nogil": _raw_nogil, "native": _native, "objects": _objects}


def scenario_native_threads(nthreads: int, count: int, keep: int, size: int, rounds: int) -> dict:
    alloccount.start(mode="exact", domains="raw")
    out = []
    for _ in range(rounds):
        buffers = [bytearray(64) for _ in range(3)]
        T.raw_threads(nthreads, count, size, keep, _core.read_into, *buffers)
        b, m, a = map(unpack, buffers)
        out.append({"mid": {k: m[k] - b[k] for k in FIELDS}, "after": {k: a[k] - b[k] for k in FIELDS}})
    final = read_figures()
    return {"rounds": out, "slots": final["thread_slots"], "other_threads_with_a_slot": len(_core.threads()),
            "final": final}


def scenario_mixed_threads(seconds: float) -> dict:
    alloccount.start(mode="exact", domains="all")
    pauses = []
    with Workers("raw_nogil", "raw_nogil", "raw_nogil", "native", "objects") as w:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(0.05)
            w.pause()
            pauses.append(read_figures())
            w.resume()
    joined = read_figures()
    return {"pauses": pauses, "joined": joined, "raw_units": w.units_of("raw_nogil"),
            "object_units": w.units_of("objects")}


def scenario_start_stop_cycles(sessions: list, seconds: float) -> dict:
    cycles = []
    with Workers("raw_nogil", "raw_nogil", "native", "objects") as w:
        end = time.monotonic() + seconds
        for mode, domains in itertools.cycle(sessions):
            if time.monotonic() >= end:
                break
            alloccount.start(mode=mode, domains=domains if isinstance(domains, str) else tuple(domains))
            raw0, obj0 = w.units_of("raw_nogil"), w.units_of("objects")
            cycle = {"mode": mode, "domains": domains, "tracked_domains": list(alloccount.tracked_domains()),
                     "tracking_mode": alloccount.tracking_mode(), "is_tracking": alloccount.is_tracking()}
            time.sleep(0.01)
            w.pause()
            cycle["paused"] = read_figures()
            # a unit in progress at start() may have begun before it: one per thread is not
            # counted as inside the session
            cycle["raw_units_inside"] = max(0, w.units_of("raw_nogil") - raw0 - 2)
            cycle["object_units_inside"] = max(0, w.units_of("objects") - obj0 - 1)
            w.resume()
            time.sleep(0.01)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                alloccount.stop()  # while they allocate
            cycle["after_stop"] = read_counters()
            time.sleep(0.005)
            cycle["later"] = read_counters()
            cycle["is_tracking_after_stop"] = alloccount.is_tracking()
            cycle["stop_warnings"] = [str(c.message) for c in caught]
            cycles.append(cycle)
    return {"cycles": cycles}


def _child_body() -> dict:
    """Runs in a forked child: allocate on this thread and on new threads, then read."""
    before = counters(0)["allocations"]
    T.raw_churn_nogil(5000, 64)
    threads = [threading.Thread(target=T.raw_churn_nogil, args=(5000, 64)) for _ in range(2)]
    for t in threads:
        t.start()
    junk = [{"k": str(i), "v": [i] * 5} for i in range(2000)]
    for t in threads:
        t.join()
    del junk
    figures = read_figures()
    return {"raw_allocations_delta": figures["raw"]["allocations"] - before,
            "is_tracking": alloccount.is_tracking(), "figures": figures}


def scenario_fork_under_load(children: int, seconds: float) -> dict:
    alloccount.start(mode="exact", domains="all")
    results = []
    with Workers("raw_nogil", "raw_nogil", "objects") as w:
        pause = seconds / children
        for _ in range(children):
            time.sleep(pause)
            read_fd, write_fd = os.pipe()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads
                pid = os.fork()
            if pid == 0:  # the forked child: never returns into the scenario
                os.close(read_fd)
                code = 1
                try:
                    os.write(write_fd, json.dumps(_child_body()).encode())
                    code = 0
                except BaseException:
                    traceback.print_exc()
                finally:
                    os._exit(code)
            os.close(write_fd)
            with os.fdopen(read_fd) as pipe:
                data = pipe.read()  # EOF when the child exits (or dies)
            _, status = os.waitpid(pid, 0)
            result = json.loads(data) if data else {}
            result["status"] = os.waitstatus_to_exitcode(status)
            results.append(result)
        w.pause()
        parent = read_figures()
        w.resume()
    return {"children": results, "parent": parent}


def scenario_stacking(sequence: str, capture: str) -> dict:
    import tracemalloc

    import memray
    from memray import AllocatorType, FileReader

    tracker = memray.Tracker(capture, trace_python_allocators=True, native_traces=False) if "M" in sequence else None
    steps, memray_markers = [], []
    memray_on = False
    keep = []
    for i, (op, tool) in enumerate(parse(sequence)):
        step: dict = {}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if tool == "A":
                alloccount.start() if op == "+" else alloccount.stop()
            elif tool == "T":
                tracemalloc.start() if op == "+" else tracemalloc.stop()
            elif op == "+":
                tracker.__enter__()
                memray_on = True
            else:
                tracker.__exit__(None, None, None)
                memray_on = False
        step["stop_warned"] = any(issubclass(c.category, alloccount.AllocCountWarning) for c in caught)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            step["is_tracking"] = alloccount.is_tracking()
        step["is_tracking_warned"] = any(issubclass(c.category, alloccount.AllocCountWarning) for c in caught)
        # the marker: a buffer of a size nothing else asks for
        marker = 300_000 + 1_000 * i
        step["marker"] = marker
        traced0 = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else 0
        mem0, obj0, mem1, obj1 = (bytearray(64) for _ in range(4))
        _core.read_into(1, mem0)
        _core.read_into(2, obj0)
        keep.append(bytearray(marker))
        _core.read_into(1, mem1)
        _core.read_into(2, obj1)
        # MEM + OBJ: 3.11 asks PyObject_Realloc for a bytearray's buffer, 3.13 PyMem_Realloc.
        # (Not RAW: tracemalloc above us keeps its traces there.)
        step["a_bytes"] = sum(unpack(b)["bytes_allocated"] - unpack(a)["bytes_allocated"]
                              for a, b in ((mem0, mem1), (obj0, obj1)))
        step["t_traced"] = (tracemalloc.get_traced_memory()[0] - traced0) if tracemalloc.is_tracing() else None
        if _core.mode():
            # Read twice, keep the second: with tracemalloc above us, the first allocation from
            # a new call site interns a traceback (kept), and on 3.13 memray's profile hook
            # allocates on every call, so the first read's two calls see that happen in between.
            read_figures()
            step["figures"] = read_figures()
        if memray_on:
            memray_markers.append((i, marker + 1))
        steps.append(step)
    assert not memray_on and not tracemalloc.is_tracing() and not _core.mode(), "sequences end stopped"
    if tracker is not None:
        # bytearray(n) asks for its buffer with PyObject_Realloc(NULL, n + 1)
        python_allocators = {AllocatorType.PYMALLOC_MALLOC, AllocatorType.PYMALLOC_CALLOC,
                             AllocatorType.PYMALLOC_REALLOC}
        recorded = {r.size for r in FileReader(capture).get_allocation_records() if r.allocator in python_allocators}
        for i, size in memray_markers:
            steps[i]["m_recorded"] = size in recorded
    return {"steps": steps}


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def scenario_realloc_across_restart(old: int, new: int) -> dict:
    libc = ctypes.CDLL(None)  # a CDLL call releases the GIL: these run without it
    raw_malloc, raw_realloc = libc.PyMem_RawMalloc, libc.PyMem_RawRealloc
    raw_malloc.restype, raw_malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    raw_realloc.restype, raw_realloc.argtypes = ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_size_t]
    libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
    # No mmap: the block comes from a heap with a fence after it, so growing it copies (~10 ms)
    # instead of remapping (microseconds). ASan's realloc always copies.
    libc.mallopt(-4, 0)  # M_MMAP_MAX
    for _attempt in range(10):
        alloccount.start(mode="exact", domains="raw")
        calling, rss_before, blocks = threading.Event(), [], []

        def realloc() -> None:
            # Allocated by this thread, so in its own glibc arena: realloc copies while
            # holding the block's arena lock, and the main thread's stop() must not wait on it.
            block, fence = raw_malloc(old), libc.malloc(1 << 20)
            ctypes.memset(block, 1, old)  # resident: the copy then makes the new block so
            rss_before.append(_rss())
            calling.set()  # the GIL is released by the call below, not before
            blocks.extend([raw_realloc(block, new), fence])

        worker = threading.Thread(target=realloc)
        worker.start()
        calling.wait()  # we get the GIL back once the worker released it in the call
        # The realloc removes the old entry (session 1) before the real realloc: once memory
        # grows by a quarter of the block, it is copying, and the entry is gone.
        deadline, copying = time.monotonic() + 0.2, False
        while not copying and time.monotonic() < deadline:
            copying = _rss() - rss_before[0] >= old // 4
        alloccount.stop()
        alloccount.start(mode="exact", domains="raw")
        worker.join()
        session2 = read_figures()
        T.free("raw", blocks[0])
        libc.free(blocks[1])
        alloccount.stop()
        # A straddle: copying before stop(), and session 2 saw the realloc end.
        if copying and session2["raw"]["bytes_allocated"] >= new:
            return {"straddled": True, "session2": session2["raw"], "tracked_blocks": session2["tracked_blocks"]}
    return {"straddled": False}


def _main() -> int:
    import faulthandler

    faulthandler.dump_traceback_later(CHILD_DEADLINE_S, exit=True)
    scenario, params = sys.argv[1], json.loads(sys.argv[2])
    result = globals()["scenario_" + scenario](**params)
    print(json.dumps(result))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_main())
