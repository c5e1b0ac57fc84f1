# cython: language_level=3, binding=False
"""Test-only helpers: exact allocator calls in each domain, and RAW loops without the GIL.

Shipped in the package (like memray's ``_test_utils``) so the test suite needs no compiler.
Addresses cross into Python as ints; nothing here is part of the public API.
"""

from libc.stdint cimport uintptr_t

cdef extern from "Python.h":
    void *PyMem_RawMalloc(size_t n) nogil
    void *PyMem_RawCalloc(size_t nelem, size_t elsize) nogil
    void *PyMem_RawRealloc(void *p, size_t n) nogil
    void PyMem_RawFree(void *p) nogil
    void *PyMem_Malloc(size_t n)
    void *PyMem_Calloc(size_t nelem, size_t elsize)
    void *PyMem_Realloc(void *p, size_t n)
    void PyMem_Free(void *p)
    void *PyObject_Malloc(size_t n)
    void *PyObject_Calloc(size_t nelem, size_t elsize)
    void *PyObject_Realloc(void *p, size_t n)
    void PyObject_Free(void *p)

DOMAINS = ("raw", "mem", "obj")


cdef int _domain(str name) except -1:
    try:
        return DOMAINS.index(name)
    except ValueError:
        raise ValueError(f"unknown domain {name!r}") from None


def malloc(str domain, size_t size):
    """Allocate ``size`` bytes in ``domain``; returns the address (0 on failure)."""
    return <uintptr_t>_malloc(_domain(domain), size)


def calloc(str domain, size_t nelem, size_t elsize):
    """Allocate ``nelem * elsize`` zeroed bytes; returns the address (0 on failure)."""
    return <uintptr_t>_calloc(_domain(domain), nelem, elsize)


def realloc(str domain, uintptr_t address, size_t size):
    """Resize the block at ``address``; returns the new address (0 on failure)."""
    return <uintptr_t>_realloc(_domain(domain), <void *>address, size)


def free(str domain, uintptr_t address):
    """Free the block at ``address`` (0 is allowed, as free(NULL))."""
    _free(_domain(domain), <void *>address)


def malloc_many(str domain, Py_ssize_t count, size_t size):
    """Allocate ``count`` blocks of ``size`` bytes; returns their addresses."""
    return [malloc(domain, size) for _ in range(count)]


def free_many(str domain, addresses):
    """Free every address of ``addresses``."""
    for address in addresses:
        free(domain, address)


def raw_churn_nogil(Py_ssize_t count, size_t size, Py_ssize_t keep=0):
    """RAW malloc/free ``count`` times WITHOUT the GIL (call it from several threads).

    The last ``keep`` blocks are left allocated; their addresses are returned so the caller
    can check live-block figures and free them later with free_many("raw", ...).
    """
    cdef Py_ssize_t i
    cdef void *p
    cdef list kept = []
    cdef Py_ssize_t churn = count - keep
    with nogil:
        for i in range(churn):
            p = PyMem_RawMalloc(size)
            if p != NULL:
                (<char *>p)[0] = 1
            PyMem_RawFree(p)
    for i in range(keep):
        kept.append(<uintptr_t>PyMem_RawMalloc(size))
    return kept


from libc.stdlib cimport free as libc_free, malloc as libc_malloc


def cycle(str domain, Py_ssize_t count, size_t size, reader=None, before=None, mid=None, after=None):
    """Allocate ``count`` blocks of ``size`` bytes in ``domain``, then free them all.

    Addresses are kept in a libc array so the helper itself allocates nothing in any Python
    domain. If ``reader`` is given it is called as ``reader(mid)`` while every block is live
    (e.g. a partial of alloccount._core.read_into).
    """
    cdef int d = _domain(domain)
    cdef void **blocks = <void **>libc_malloc(count * sizeof(void *))
    cdef Py_ssize_t i
    if blocks == NULL:
        raise MemoryError()
    try:
        if reader is not None:
            reader(d, before)
        for i in range(count):
            blocks[i] = _malloc(d, size)
        if reader is not None:
            reader(d, mid)
        for i in range(count):
            _free(d, blocks[i])
        if reader is not None:
            reader(d, after)
    finally:
        libc_free(blocks)


# ---------------------------------------------------------------- scripted sequences

OP_MALLOC, OP_CALLOC, OP_REALLOC, OP_FREE, OP_READ = range(5)
cdef enum:
    MAX_SLOTS = 64


def run_ops(str domain, list ops, reader, list buffers):
    """Run a scripted sequence of allocator calls in ``domain``, allocating nothing else.

    ``ops`` is a list of tuples built beforehand:
    ``(OP_MALLOC, slot, size)``, ``(OP_CALLOC, slot, nelem, elsize)``,
    ``(OP_REALLOC, slot, size)`` (slot may hold NULL), ``(OP_FREE, slot)``,
    ``(OP_READ, buffer_index)`` which calls ``reader(domain_index, buffers[i])``.
    Slots are 64 pointers, all NULL at start; returns the list of slots that hold NULL after
    each op that produced a pointer (so a test can see which calls failed), built at the end.
    Blocks still held at the end are freed (after the last op) so nothing leaks.
    """
    cdef int d = _domain(domain)
    cdef void *slots[MAX_SLOTS]
    cdef char failed[256]
    cdef Py_ssize_t i, n_ops = len(ops)
    cdef int code, slot
    cdef void *q
    if n_ops > 256:
        raise ValueError("at most 256 ops")
    for i in range(MAX_SLOTS):
        slots[i] = NULL
    for i in range(n_ops):
        failed[i] = 0
        op = ops[i]
        code = op[0]
        if code == OP_READ:
            reader(d, buffers[op[1]])
            continue
        slot = op[1]
        if slot < 0 or slot >= MAX_SLOTS:
            raise ValueError(f"slot {slot} out of range")
        if code == OP_MALLOC:
            slots[slot] = _malloc(d, op[2])
            failed[i] = slots[slot] == NULL
        elif code == OP_CALLOC:
            slots[slot] = _calloc(d, op[2], op[3])
            failed[i] = slots[slot] == NULL
        elif code == OP_REALLOC:
            q = _realloc(d, slots[slot], op[2])
            failed[i] = q == NULL
            if q != NULL:
                slots[slot] = q
        elif code == OP_FREE:
            _free(d, slots[slot])
            slots[slot] = NULL
        else:
            raise ValueError(f"unknown op {code}")
    for i in range(MAX_SLOTS):
        if slots[i] != NULL:
            _free(d, slots[i])
    return [i for i in range(n_ops) if failed[i]]


cdef void *_malloc(int d, size_t n):
    if d == 0:
        return PyMem_RawMalloc(n)
    if d == 1:
        return PyMem_Malloc(n)
    return PyObject_Malloc(n)


cdef void *_calloc(int d, size_t nelem, size_t elsize):
    if d == 0:
        return PyMem_RawCalloc(nelem, elsize)
    if d == 1:
        return PyMem_Calloc(nelem, elsize)
    return PyObject_Calloc(nelem, elsize)


cdef void *_realloc(int d, void *p, size_t n):
    if d == 0:
        return PyMem_RawRealloc(p, n)
    if d == 1:
        return PyMem_Realloc(p, n)
    return PyObject_Realloc(p, n)


cdef void _free(int d, void *p):
    if d == 0:
        PyMem_RawFree(p)
    elif d == 1:
        PyMem_Free(p)
    else:
        PyObject_Free(p)


# ---------------------------------------------------------------- native threads

cdef extern from "<pthread.h>" nogil:
    ctypedef unsigned long pthread_t
    int pthread_create(pthread_t *thread, void *attr, void *(*start)(void *) noexcept nogil, void *arg)
    int pthread_join(pthread_t thread, void **retval)

ctypedef struct _raw_job:
    Py_ssize_t count
    Py_ssize_t keep
    size_t size
    void **kept


cdef void *_raw_worker(void *arg) noexcept nogil:
    cdef _raw_job *job = <_raw_job *>arg
    cdef Py_ssize_t i
    cdef void *p
    for i in range(job.count):
        p = PyMem_RawMalloc(job.size)
        PyMem_RawFree(p)
    for i in range(job.keep):
        job.kept[i] = PyMem_RawMalloc(job.size)
    return NULL


def raw_threads(int nthreads, Py_ssize_t count, size_t size, Py_ssize_t keep, reader, before, mid, after):
    """``nthreads`` native threads (no Python thread state, never the GIL) each do ``count``
    RAW malloc/free pairs of ``size`` bytes concurrently, then keep ``keep`` blocks.

    Reads: ``before`` ahead of starting them, ``mid`` once all joined (kept blocks live),
    ``after`` once the kept blocks are freed. Nothing else allocates in between.
    """
    cdef _raw_job *jobs = <_raw_job *>libc_malloc(nthreads * sizeof(_raw_job))
    cdef pthread_t *tids = <pthread_t *>libc_malloc(nthreads * sizeof(pthread_t))
    cdef void **kept = <void **>libc_malloc((nthreads * keep + 1) * sizeof(void *))
    cdef int t, started = 0
    cdef Py_ssize_t i
    if jobs == NULL or tids == NULL or kept == NULL:
        libc_free(jobs); libc_free(tids); libc_free(kept)
        raise MemoryError()
    try:
        reader(0, before)
        with nogil:
            for t in range(nthreads):
                jobs[t].count = count
                jobs[t].keep = keep
                jobs[t].size = size
                jobs[t].kept = kept + t * keep
                if pthread_create(&tids[t], NULL, _raw_worker, &jobs[t]) != 0:
                    break
                started += 1
            for t in range(started):
                pthread_join(tids[t], NULL)
        if started != nthreads:
            raise OSError("pthread_create failed")
        reader(0, mid)
        for i in range(nthreads * keep):
            PyMem_RawFree(kept[i])
        reader(0, after)
    finally:
        libc_free(jobs)
        libc_free(tids)
        libc_free(kept)
