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
    cdef int d = _domain(domain)
    cdef void *p
    if d == 0:
        p = PyMem_RawMalloc(size)
    elif d == 1:
        p = PyMem_Malloc(size)
    else:
        p = PyObject_Malloc(size)
    return <uintptr_t>p


def calloc(str domain, size_t nelem, size_t elsize):
    """Allocate ``nelem * elsize`` zeroed bytes; returns the address (0 on failure)."""
    cdef int d = _domain(domain)
    cdef void *p
    if d == 0:
        p = PyMem_RawCalloc(nelem, elsize)
    elif d == 1:
        p = PyMem_Calloc(nelem, elsize)
    else:
        p = PyObject_Calloc(nelem, elsize)
    return <uintptr_t>p


def realloc(str domain, uintptr_t address, size_t size):
    """Resize the block at ``address``; returns the new address (0 on failure)."""
    cdef int d = _domain(domain)
    cdef void *p = <void *>address
    cdef void *q
    if d == 0:
        q = PyMem_RawRealloc(p, size)
    elif d == 1:
        q = PyMem_Realloc(p, size)
    else:
        q = PyObject_Realloc(p, size)
    return <uintptr_t>q


def free(str domain, uintptr_t address):
    """Free the block at ``address`` (0 is allowed, as free(NULL))."""
    cdef int d = _domain(domain)
    cdef void *p = <void *>address
    if d == 0:
        PyMem_RawFree(p)
    elif d == 1:
        PyMem_Free(p)
    else:
        PyObject_Free(p)


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
            if d == 0:
                blocks[i] = PyMem_RawMalloc(size)
            elif d == 1:
                blocks[i] = PyMem_Malloc(size)
            else:
                blocks[i] = PyObject_Malloc(size)
        if reader is not None:
            reader(d, mid)
        for i in range(count):
            if d == 0:
                PyMem_RawFree(blocks[i])
            elif d == 1:
                PyMem_Free(blocks[i])
            else:
                PyObject_Free(blocks[i])
        if reader is not None:
            reader(d, after)
    finally:
        libc_free(blocks)
