# cython: language_level=3, binding=False
"""The Cython binding of the alloccount engine (engine.c).

Thin on purpose: every function converts C structs to Python values and nothing else.
Validation of user input and warnings live in the Python layer (alloccount._tracking).
"""

from libc.stdint cimport int64_t, uint64_t
cimport cython
from cpython.bytearray cimport PyByteArray_AS_STRING
from libc.stdlib cimport free, malloc


cdef extern from "engine.h" nogil:
    int AC_NDOMAINS
    int AC_MAX_CATEGORIES
    int AC_MODE_OFF
    int AC_MODE_EXACT
    int AC_MODE_COUNTS

    ctypedef struct ac_counters:
        uint64_t allocations
        uint64_t frees
        uint64_t reallocs
        uint64_t bytes_allocated
        uint64_t bytes_freed
        int64_t current_bytes
        int64_t peak_bytes
        uint64_t untracked_frees

    ctypedef struct ac_thread_figures:
        uint64_t ident
        int alive
        ac_counters counters

    ctypedef struct ac_engine_info:
        int mode
        unsigned installed_mask
        unsigned counting_mask
        int gil_side_locked
        size_t table_capacity[2]
        size_t table_count[2]
        size_t table_bytes
        uint64_t table_insert_failures
        uint64_t stale_entries
        size_t threads
        size_t categories

    int ac_start(int mode, unsigned domain_mask, const char **err)
    unsigned ac_stop()
    unsigned ac_probe(unsigned mask)
    int ac_mode()
    unsigned ac_counting_mask()
    void ac_reset_peak()
    void ac_read_domain(int domain, ac_counters *out)
    void ac_read_total(ac_counters *out)
    int64_t ac_current_bytes()
    int64_t ac_peak_bytes()
    uint64_t ac_allocations()
    uint64_t ac_frees()
    void ac_read_category(int category, ac_counters *out)
    void ac_read_engine_info(ac_engine_info *out)
    int ac_set_category(int category)
    int ac_get_category()
    void ac_note_category(int category)
    void ac_read_self(ac_counters *out)
    void ac_self_reset_peak()
    size_t ac_read_threads(ac_thread_figures *out, size_t max)


MODE_EXACT = AC_MODE_EXACT
MODE_COUNTS = AC_MODE_COUNTS
MAX_CATEGORIES = AC_MAX_CATEGORIES
DOMAIN_NAMES = ("raw", "mem", "obj")  # index = PYMEM_DOMAIN_RAW/MEM/OBJ

# The mode and domains of the last session, so figures read after stop() keep their meaning
# (counts-mode byte levels stay None, untracked domains stay refused).
cdef int _session_mode = 0
cdef unsigned _session_mask = 0


cdef enum:
    N_FIELDS = 9
    # Figures that need the pointer table: None in counts mode.
    TABLE_FIELDS = (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8)

_FIELDS = (
    "allocations", "frees", "reallocs", "bytes_allocated", "bytes_freed",
    "current_bytes", "peak_bytes", "live_blocks", "untracked_frees",
)


@cython.freelist(16)
@cython.final
cdef class Stats:
    """Allocation figures at one instant: immutable, comparable, picklable.

    Fields: ``allocations``, ``frees``, ``reallocs``, ``bytes_allocated``, ``bytes_freed``,
    ``current_bytes``, ``peak_bytes``, ``live_blocks``, ``untracked_frees``. In
    ``mode="counts"`` the figures that need the pointer table (``bytes_freed``,
    ``current_bytes``, ``peak_bytes``, ``live_blocks``, ``untracked_frees``) are ``None``.
    """

    # C fields, boxed on access: stats() in a tight loop pays for one small object, not nine ints.
    cdef int64_t _v[N_FIELDS]
    cdef unsigned _none  # bit i set: field i is None

    _fields = _FIELDS

    def __init__(self, allocations=0, frees=0, reallocs=0, bytes_allocated=0, bytes_freed=0,
                 current_bytes=0, peak_bytes=0, live_blocks=0, untracked_frees=0):
        cdef int i
        values = (allocations, frees, reallocs, bytes_allocated, bytes_freed,
                  current_bytes, peak_bytes, live_blocks, untracked_frees)
        self._none = 0
        for i in range(N_FIELDS):
            if values[i] is None:
                self._none |= 1u << i
                self._v[i] = 0
            else:
                self._v[i] = values[i]

    cdef inline object _get(self, int i):
        if self._none & (1u << i):
            return None
        return self._v[i]

    @property
    def allocations(self):
        """Blocks allocated since start()."""
        return self._get(0)

    @property
    def frees(self):
        """Frees of blocks allocated since start() (counts mode: every free)."""
        return self._get(1)

    @property
    def reallocs(self):
        """Successful reallocs of a non-NULL pointer."""
        return self._get(2)

    @property
    def bytes_allocated(self):
        """Bytes requested by allocations and reallocs (new size)."""
        return self._get(3)

    @property
    def bytes_freed(self):
        """Bytes of tracked blocks freed or reallocated away (None in counts mode)."""
        return self._get(4)

    @property
    def current_bytes(self):
        """Bytes in live tracked blocks (None in counts mode)."""
        return self._get(5)

    @property
    def peak_bytes(self):
        """High-water mark of current_bytes (None in counts mode)."""
        return self._get(6)

    @property
    def live_blocks(self):
        """allocations - frees (None in counts mode)."""
        return self._get(7)

    @property
    def untracked_frees(self):
        """Frees of blocks allocated before start() (None in counts mode)."""
        return self._get(8)

    cdef tuple _values(self):
        return tuple([self._get(i) for i in range(N_FIELDS)])

    def _asdict(self):
        """The figures as a ``dict`` (field order kept), e.g. for JSON."""
        return dict(zip(_FIELDS, self._values()))

    def _replace(self, **changes):
        """A copy with some figures replaced (as ``namedtuple._replace``)."""
        values = self._asdict()
        unknown = set(changes) - set(values)
        if unknown:
            raise TypeError(f"Stats has no field(s) {sorted(unknown)}")
        values.update(changes)
        return Stats(**values)

    def __iter__(self):
        return iter(self._values())

    def __len__(self):
        return N_FIELDS

    def __eq__(self, other):
        if not isinstance(other, Stats):
            return NotImplemented
        return self._values() == (<Stats>other)._values()

    def __hash__(self):
        return hash(self._values())

    def __reduce__(self):
        return (Stats, self._values())

    def __repr__(self):
        body = ", ".join(f"{name}={value!r}" for name, value in zip(_FIELDS, self._values()))
        return f"Stats({body})"


cdef Stats _make_stats(const ac_counters *c, bint exact):
    cdef Stats s = Stats.__new__(Stats)
    s._v[0] = c.allocations
    s._v[1] = c.frees
    s._v[2] = c.reallocs
    s._v[3] = c.bytes_allocated
    s._v[4] = c.bytes_freed
    s._v[5] = c.current_bytes
    s._v[6] = c.peak_bytes
    s._v[7] = <int64_t>(c.allocations - c.frees)
    s._v[8] = c.untracked_frees
    s._none = 0 if exact else TABLE_FIELDS
    return s


def start(int mode, unsigned mask):
    """Install/enable the hooks (the caller validated the arguments)."""
    global _session_mode, _session_mask
    cdef const char *err = NULL
    if ac_start(mode, mask, &err) != 0:
        raise RuntimeError(f"alloccount engine: {err.decode()}")
    _session_mode = mode
    _session_mask = mask


def stop():
    """Stop counting; returns the mask of domains left in the chain as pass-through."""
    return ac_stop()


def probe(unsigned mask):
    """Domains of ``mask`` whose calls still reach our hooks."""
    return ac_probe(mask)


def mode():
    """Current counting mode (0 when not tracking)."""
    return ac_mode()


def counting_mask():
    """Domains counted now (0 when not tracking)."""
    return ac_counting_mask()


def session():
    """(mode, domain mask) of the current or last session; (0, 0) before the first."""
    return _session_mode, _session_mask


def reset_peak():
    """Set every peak figure (global, per domain, per category) to its current value."""
    ac_reset_peak()


# The scalar getters return the previous int object when the figure has not changed. In a
# polling loop the returned int is the loop's only allocation: boxing a fresh one each time
# would change the very level being polled and double the cost of a read. (For the event
# counts the box is itself the next allocation, so they box on every call.)
cdef object _last_current = 0, _last_peak = 0, _last_allocations = 0, _last_frees = 0


def current_bytes():
    """Bytes in live blocks allocated since start() (exact mode; 0 in counts mode)."""
    global _last_current
    cdef int64_t value = ac_current_bytes()
    if value != <int64_t>_last_current:
        _last_current = value
    return _last_current


def peak_bytes():
    """High-water mark of current_bytes() since start() or reset_peak()."""
    global _last_peak
    cdef int64_t value = ac_peak_bytes()
    if value != <int64_t>_last_peak:
        _last_peak = value
    return _last_peak


def allocations():
    """Allocations counted since start()."""
    global _last_allocations
    cdef uint64_t value = ac_allocations()
    if value != <uint64_t>_last_allocations:
        _last_allocations = value
    return _last_allocations


def frees():
    """Frees of tracked blocks since start() (counts mode: all frees)."""
    global _last_frees
    cdef uint64_t value = ac_frees()
    if value != <uint64_t>_last_frees:
        _last_frees = value
    return _last_frees


def stats(domain=None):
    """Figures for all tracked domains, or for one ("raw", "mem" or "obj")."""
    cdef ac_counters c
    cdef int d
    if domain is None:
        ac_read_total(&c)
        return _make_stats(&c, _session_mode == AC_MODE_EXACT)
    if not isinstance(domain, str):
        raise TypeError(f"stats(domain=...) takes None or a str, not {type(domain).__name__}")
    try:
        d = DOMAIN_NAMES.index(domain)
    except ValueError:
        raise ValueError(
            f"stats(domain={domain!r}): unknown domain; expected one of {DOMAIN_NAMES}") from None
    if not (_session_mask & (1u << d)):
        tracked = tuple(n for i, n in enumerate(DOMAIN_NAMES) if _session_mask & (1u << i))
        raise ValueError(
            f"stats(domain={domain!r}): domain not tracked in this session "
            f"(tracked: {tracked or 'none, start() was never called'})")
    ac_read_domain(d, &c)
    return _make_stats(&c, _session_mode == AC_MODE_EXACT)


def category_stats_by_id(int category):
    """Figures for one category id."""
    cdef ac_counters c
    ac_read_category(category, &c)
    return _make_stats(&c, _session_mode == AC_MODE_EXACT)


def set_category(int category):
    """Set the calling thread's category id; returns the previous one."""
    cdef int prev = ac_set_category(category)
    if prev < 0:
        raise ValueError(f"category id {category} out of range 0..{AC_MAX_CATEGORIES - 1}")
    return prev


def get_category():
    """The calling thread's category id."""
    return ac_get_category()


def note_category(int category):
    """Tell the engine a category id is in use."""
    ac_note_category(category)


def self_stats():
    """The calling thread's own figures (allocations it made, frees it made)."""
    cdef ac_counters c
    ac_read_self(&c)
    return _make_stats(&c, _session_mode == AC_MODE_EXACT)


def self_reset_peak():
    """Calling thread: set its own peak to its current level."""
    ac_self_reset_peak()


def threads():
    """[(ident, Stats)] for every live thread that allocated since it started."""
    cdef size_t cap = 64, n
    cdef ac_thread_figures *buf = NULL
    while True:
        buf = <ac_thread_figures *>malloc(cap * sizeof(ac_thread_figures))
        if buf == NULL:
            raise MemoryError()
        n = ac_read_threads(buf, cap)
        if n <= cap:
            break
        free(buf)
        cap = n + 16
    try:
        exact = _session_mode == AC_MODE_EXACT
        return [(buf[i].ident, _make_stats(&buf[i].counters, exact)) for i in range(n)]
    finally:
        free(buf)


def engine_info():
    """Internal state of the engine, for diagnostics and the benchmark."""
    cdef ac_engine_info info
    ac_read_engine_info(&info)
    return {
        "mode": info.mode,
        "installed_mask": info.installed_mask,
        "counting_mask": info.counting_mask,
        "free_threaded": bool(info.gil_side_locked),
        "table_capacity": info.table_capacity[0] + info.table_capacity[1],
        "tracked_blocks": info.table_count[0] + info.table_count[1],
        "table_bytes": info.table_bytes,
        "table_insert_failures": info.table_insert_failures,
        "stale_entries": info.stale_entries,
        "thread_slots": info.threads,
        "categories": info.categories,
    }


def read_into(int domain, bytearray out):
    """Copy one domain's counters (-1: all domains) into ``out`` WITHOUT allocating.

    For tests that must see exact counts (a Stats object is itself an allocation). ``out``
    is a bytearray of 64 bytes that receives 8 native int64: allocations, frees, reallocs,
    bytes_allocated, bytes_freed, current_bytes, peak_bytes, untracked_frees.
    """
    cdef ac_counters c
    cdef int64_t *dst
    if len(out) < 8 * sizeof(int64_t):
        raise ValueError("read_into needs a bytearray of 64 bytes")
    if domain < 0:
        ac_read_total(&c)
    elif domain < AC_NDOMAINS:
        ac_read_domain(domain, &c)
    else:
        raise ValueError(f"unknown domain index {domain}")
    dst = <int64_t *>PyByteArray_AS_STRING(out)
    dst[0] = c.allocations
    dst[1] = c.frees
    dst[2] = c.reallocs
    dst[3] = c.bytes_allocated
    dst[4] = c.bytes_freed
    dst[5] = c.current_bytes
    dst[6] = c.peak_bytes
    dst[7] = c.untracked_frees


cdef inline void _store_counters(const ac_counters *c, int64_t *dst):
    dst[0] = c.allocations
    dst[1] = c.frees
    dst[2] = c.reallocs
    dst[3] = c.bytes_allocated
    dst[4] = c.bytes_freed
    dst[5] = c.current_bytes
    dst[6] = c.peak_bytes
    dst[7] = c.untracked_frees


def self_read_into(bytearray out):
    """The calling thread's counters into ``out`` (64 bytes, see read_into), allocating nothing."""
    cdef ac_counters c
    if len(out) < 8 * sizeof(int64_t):
        raise ValueError("self_read_into needs a bytearray of 64 bytes")
    ac_read_self(&c)
    _store_counters(&c, <int64_t *>PyByteArray_AS_STRING(out))


def category_snapshot(int count):
    """(total Stats, [Stats of category 0..count-1]), all read before any object is built.

    Reading every counter first keeps the snapshot consistent: building the result allocates,
    and those allocations would otherwise land between two categories' reads.
    """
    cdef ac_counters total
    cdef ac_counters *cats
    cdef int i
    cdef bint exact = _session_mode == AC_MODE_EXACT
    if count < 0 or count > AC_MAX_CATEGORIES:
        raise ValueError(f"category count {count} out of range")
    cats = <ac_counters *>malloc((count + 1) * sizeof(ac_counters))
    if cats == NULL:
        raise MemoryError()
    try:
        ac_read_total(&total)
        for i in range(count):
            ac_read_category(i, &cats[i])
        result = []
        for i in range(count):
            s = _make_stats(&cats[i], exact)
            # Per category: a free of a block from before start() has no category, and in
            # counts mode no free can be attributed (no table).
            (<Stats>s)._none |= (1u << 8) | (0 if exact else (1u << 1))
            result.append(s)
        return _make_stats(&total, exact), result
    finally:
        free(cats)


# ---------------------------------------------------------------- category scopes

from cpython.contextvars cimport PyContextVar_Set, get_value_no_default

# The current category chain lives in a ContextVar owned by alloccount.categories (so each
# thread and asyncio task has its own): (id, parent chain), root (0, None).
cdef object _category_var = None
cdef tuple _ROOT_STATE = (0, None)


def bind_category_state(var):
    """Give the engine the ContextVar that holds the category chain (categories.py does it)."""
    global _category_var
    _category_var = var


cdef class CategoryScope:
    """Enter/leave a category id: the engine's per-thread id and the context's chain.

    In C because ``with category(...)`` sits in hot loops: a Python-level __enter__/__exit__
    pair costs more than the rest of the switch. The chain link is allocated before the
    switch, so a category's own bookkeeping is charged to the enclosing category.
    """

    cdef readonly int id

    def __cinit__(self, int category_id, *args, **kwargs):
        if category_id < 0 or category_id >= AC_MAX_CATEGORIES:
            raise ValueError(f"category id {category_id} out of range")
        self.id = category_id

    def __enter__(self):
        PyContextVar_Set(_category_var, (self.id, get_value_no_default(_category_var)))
        ac_set_category(self.id)
        return self

    def __exit__(self, exc_type, exc, tb):
        cdef tuple state = <tuple>get_value_no_default(_category_var)
        cdef object parent = state[1]
        if parent is None:
            parent = _ROOT_STATE
        ac_set_category(<int>(<tuple>parent)[0])
        PyContextVar_Set(_category_var, parent)
        return False
