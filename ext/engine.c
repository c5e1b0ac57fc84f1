/*
 * alloccount engine: allocator hooks, counters and the pointer table.
 *
 * Read ../docs/engine.md for the design; the comments here say why at the place it matters.
 * Naming: statics s_, thread-locals t_, macros AC_.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"

#define AC_LIKELY(x) __builtin_expect(!!(x), 1)
#define AC_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define AC_INLINE static inline __attribute__((always_inline))
/* Figures are written by one writer at a time (the GIL or the spinlock) and read without a
 * lock by stats(): relaxed loads give a value the figure had at some instant, which is all
 * a reader needs. */
#define AC_LOAD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define AC_STORE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELAXED)

/* One list drives the per-domain hook functions and the hook table. */
#define AC_FOR_EACH_DOMAIN(X) \
    X(raw, PYMEM_DOMAIN_RAW)  \
    X(mem, PYMEM_DOMAIN_MEM)  \
    X(obj, PYMEM_DOMAIN_OBJ)

/* ---------------------------------------------------------------- sides and locking */

enum { AC_SIDE_GIL = 0, AC_SIDE_LOCKED = 1 };

#ifdef Py_GIL_DISABLED
/* Free-threaded build: MEM/OBJ are not serialized by a GIL, so every domain is locked. */
#define AC_GIL_SIDE_LOCKED 1
#else
#define AC_GIL_SIDE_LOCKED 0
#endif
#define AC_SIDE_OF(d) ((AC_GIL_SIDE_LOCKED || (d) == PYMEM_DOMAIN_RAW) ? AC_SIDE_LOCKED : AC_SIDE_GIL)

static int s_lock; /* spinlock of the locked side: held for a table operation and its counting */

static void ac_lock_slow(void)
{
    unsigned spins = 0;
    do {
        while (AC_LOAD(s_lock)) {
            /* A table resize can hold the lock for milliseconds: stop burning the core. */
            if (++spins > 256) {
                sched_yield();
            } else {
                __builtin_ia32_pause();
            }
        }
    } while (__atomic_exchange_n(&s_lock, 1, __ATOMIC_ACQUIRE));
}

AC_INLINE void ac_lock(void)
{
    if (AC_UNLIKELY(__atomic_exchange_n(&s_lock, 1, __ATOMIC_ACQUIRE))) {
        ac_lock_slow();
    }
}

AC_INLINE void ac_unlock(void) { __atomic_store_n(&s_lock, 0, __ATOMIC_RELEASE); }

#define AC_SIDE_LOCK(side)                          \
    do {                                            \
        if ((side) == AC_SIDE_LOCKED) ac_lock();    \
    } while (0)
#define AC_SIDE_UNLOCK(side)                        \
    do {                                            \
        if ((side) == AC_SIDE_LOCKED) ac_unlock();  \
    } while (0)

/* ---------------------------------------------------------------- pointer table */

/* Open addressing, linear probing, 16-byte slots, backward-shift deletion: a delete leaves no
 * tombstone, so long churn never degrades probe lengths. The value packs the requested size
 * (low 48 bits) and the category id (high 16 bits).
 *
 * Sizing: the table grows by 1.25x at 5/8 load, so its load stays between 1/2 and 5/8 and it
 * costs 26-32 bytes per live block (doubling at 3/4 swings between 3/8 and 3/4: up to 43
 * bytes; growing 1.5x at 3/4 kept 32 bytes but its longer clusters cost 20% more time on the
 * JSON-tick benchmark, measured). Any capacity works because the slot index is the high half
 * of (hash * capacity), a multiply instead of a power-of-two mask. */
typedef struct {
    uintptr_t key; /* 0 = empty: no allocator returns NULL for a live block */
    uint64_t value;
} ac_slot;

typedef struct {
    ac_slot *slots;
    size_t capacity;
    size_t count;
    size_t grow_at;     /* 5/8 of capacity */
    size_t sparse_pops; /* pops while under 1/16 load since the last resize */
} ac_table;

#define AC_SIZE_BITS 48
#define AC_SIZE_MASK ((UINT64_C(1) << AC_SIZE_BITS) - 1)
#define AC_PACK(size, cat) (((uint64_t)(size) & AC_SIZE_MASK) | ((uint64_t)(cat) << AC_SIZE_BITS))
#define AC_VALUE_SIZE(v) ((v) & AC_SIZE_MASK)
#define AC_VALUE_CAT(v) ((int)((v) >> AC_SIZE_BITS))

#define AC_TABLE_MIN_CAPACITY 4096

static uint64_t s_insert_failures;
static uint64_t s_stale_entries;

AC_INLINE size_t ac_home(const ac_table *t, uintptr_t key)
{
    /* Fibonacci hashing spreads the address bits (blocks are 16-byte aligned and often
     * adjacent); the multiply-high maps the product onto [0, capacity). */
    uint64_t h = (uint64_t)key * UINT64_C(0x9E3779B97F4A7C15);
    return (size_t)(((unsigned __int128)h * t->capacity) >> 64);
}

AC_INLINE size_t ac_next(const ac_table *t, size_t i) { return i + 1 == t->capacity ? 0 : i + 1; }

/* Cyclic distance from slot a forward to slot b. */
AC_INLINE size_t ac_distance(const ac_table *t, size_t a, size_t b) { return b >= a ? b - a : b + t->capacity - a; }

static int ac_table_init(ac_table *t, size_t capacity)
{
    /* libc, not PyMem: the table must never re-enter the hooks it serves. */
    ac_slot *slots = calloc(capacity, sizeof(ac_slot));
    if (slots == NULL) return -1;
    t->slots = slots;
    t->capacity = capacity;
    t->count = 0;
    t->grow_at = capacity / 8 * 5;
    t->sparse_pops = 0;
    return 0;
}

static void ac_table_free(ac_table *t)
{
    free(t->slots);
    memset(t, 0, sizeof(*t));
}

static int ac_table_rehash(ac_table *t, size_t capacity)
{
    ac_table fresh;
    if (ac_table_init(&fresh, capacity) < 0) return -1;
    for (size_t i = 0; i < t->capacity; i++) {
        uintptr_t key = t->slots[i].key;
        if (key == 0) continue;
        size_t j = ac_home(&fresh, key);
        while (fresh.slots[j].key != 0) j = ac_next(&fresh, j);
        fresh.slots[j] = t->slots[i];
    }
    fresh.count = t->count;
    free(t->slots);
    *t = fresh;
    return 0;
}

/* Insert key -> value.  Returns 0 when inserted, 1 when the key was already present (a
 * block freed without our hook seeing it: *stale receives the old value), -1 when the
 * table is full and cannot grow (the block is left untracked). */
AC_INLINE int ac_table_put(ac_table *t, uintptr_t key, uint64_t value, uint64_t *stale)
{
    if (AC_UNLIKELY(t->count >= t->grow_at)) {
        if (ac_table_rehash(t, t->capacity + t->capacity / 4) < 0 && 16 * (t->count + 1) > 15 * t->capacity) {
            return -1;
        }
    }
    size_t i = ac_home(t, key);
    for (;;) {
        uintptr_t k = t->slots[i].key;
        if (k == 0) {
            t->slots[i].key = key;
            t->slots[i].value = value;
            t->count++;
            return 0;
        }
        if (AC_UNLIKELY(k == key)) {
            *stale = t->slots[i].value;
            t->slots[i].value = value;
            return 1;
        }
        i = ac_next(t, i);
    }
}

/* Remove key; returns 1 and its value if it was present. */
AC_INLINE int ac_table_pop(ac_table *t, uintptr_t key, uint64_t *value)
{
    size_t i = ac_home(t, key);
    for (;;) {
        uintptr_t k = t->slots[i].key;
        if (k == key) break;
        if (k == 0) return 0;
        i = ac_next(t, i);
    }
    *value = t->slots[i].value;
    /* Backward shift: pull later entries of the cluster into the hole unless that would move
     * one before its home slot (an entry may move to i only if i lies in [home, j)). */
    size_t j = i;
    for (;;) {
        j = ac_next(t, j);
        uintptr_t k = t->slots[j].key;
        if (k == 0) break;
        size_t home = ac_home(t, k);
        if (ac_distance(t, home, j) >= ac_distance(t, i, j)) {
            t->slots[i] = t->slots[j];
            i = j;
        }
    }
    t->slots[i].key = 0;
    t->count--;
    /* Shrink once the table has stayed under 1/16 load for capacity/2 pops: a one-off spike
     * does not pin its table for the life of the process, and a workload that fills and
     * empties the table every cycle (pyperformance's float) does not rehash every cycle. */
    if (AC_UNLIKELY(16 * t->count < t->capacity) && ++t->sparse_pops > t->capacity / 2 &&
        t->capacity > AC_TABLE_MIN_CAPACITY) {
        size_t smaller = t->capacity / 2;
        (void)ac_table_rehash(t, smaller < AC_TABLE_MIN_CAPACITY ? AC_TABLE_MIN_CAPACITY : smaller);
    }
    return 1;
}

/* ---------------------------------------------------------------- counters */

typedef struct {
    ac_table table;
    /* Bytes in use in this side's domains, and the high-water mark of the ALL-domain figure
     * (this side's current plus the other side's, read racily: off by at most the blocks in
     * flight on the other side at that instant). */
    int64_t current;
    int64_t peak;
    /* Per category: current/peak use the same cross-side rule as above. */
    ac_counters cat[AC_MAX_CATEGORIES];
} ac_side;

typedef struct ac_thread {
    ac_counters c; /* written by the owner thread only (under the GIL or the spinlock) */
    uint64_t ident;
    int alive;
    struct ac_thread *next;
} ac_thread;

typedef struct {
    int guard;           /* nonzero while inside one of our hooks: nested calls pass through */
    int category;        /* this thread's current category id */
    unsigned probe_seen; /* domains whose hook saw a probe call */
    ac_thread *slot;
} ac_tls;

#define AC_GUARD_HOOK 1
#define AC_GUARD_PROBE 2

/* initial-exec: a plain %fs-relative load (+1.6-2 ns) instead of a __tls_get_addr call. */
static __thread ac_tls t_tls __attribute__((tls_model("initial-exec")));

static ac_side s_side[2];
static ac_counters s_dom[AC_NDOMAINS];
static int s_dom_mode[AC_NDOMAINS];     /* enum ac_mode per domain, read by the hooks */
static int s_mode;                      /* session mode, for readers */
static uint64_t s_session;              /* bumped by every start(): a realloc spanning a restart sees it */
static unsigned s_installed_mask;       /* domains where our hooks are in the chain */
static unsigned s_counting_mask;
static int s_max_category;              /* highest category id noted + 1 */
static PyMemAllocatorEx s_orig[AC_NDOMAINS];

/* Threads: a singly linked list of slots, pushed under s_threads_mutex, never freed (a dead
 * thread's slot is reused by the next new thread) so readers walk it without a lock. */
static ac_thread *s_threads;
static size_t s_thread_count;
static pthread_mutex_t s_threads_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_key_t s_thread_key;
static pthread_once_t s_once = PTHREAD_ONCE_INIT;
/* Used when a thread slot cannot be allocated (out of memory): its per-thread figures are
 * shared garbage, the global figures stay exact. */
static ac_thread s_orphan_slot;

/* Event counts (how many, how many bytes) and levels (current, peak) are kept apart because
 * categories take their level from ac_side_delta's cross-side rule. */
AC_INLINE void ac_events_added(ac_counters *c, uint64_t n)
{
    c->allocations++;
    c->bytes_allocated += n;
}

AC_INLINE void ac_events_removed(ac_counters *c, uint64_t n)
{
    c->frees++;
    c->bytes_freed += n;
}

AC_INLINE void ac_events_resized(ac_counters *c, uint64_t old_n, uint64_t new_n)
{
    c->reallocs++;
    c->bytes_freed += old_n;
    c->bytes_allocated += new_n;
}

AC_INLINE void ac_level(ac_counters *c, int64_t delta)
{
    c->current_bytes += delta;
    if (delta > 0 && c->current_bytes > c->peak_bytes) c->peak_bytes = c->current_bytes;
}

/* The side's all-domain level and the category's, with the cross-side peak rule. */
AC_INLINE void ac_side_delta(int side, int cat, int64_t delta)
{
    ac_side *s = &s_side[side];
    const ac_side *other = &s_side[!side];
    s->current += delta;
    s->cat[cat].current_bytes += delta;
    if (delta > 0) {
        int64_t total = s->current + AC_LOAD(other->current);
        if (total > s->peak) s->peak = total;
        int64_t cat_total = s->cat[cat].current_bytes + AC_LOAD(other->cat[cat].current_bytes);
        if (cat_total > s->cat[cat].peak_bytes) s->cat[cat].peak_bytes = cat_total;
    }
}

/* A tracked block of n bytes appeared / disappeared / was resized, in domain d (on its side),
 * category cat, by thread th.  Callers hold the side's writer (GIL or spinlock). */
AC_INLINE void ac_account_added(int d, int side, int cat, ac_counters *th, uint64_t n)
{
    ac_events_added(&s_dom[d], n);
    ac_level(&s_dom[d], (int64_t)n);
    ac_events_added(&s_side[side].cat[cat], n);
    ac_side_delta(side, cat, (int64_t)n);
    ac_events_added(th, n);
    ac_level(th, (int64_t)n);
}

AC_INLINE void ac_account_removed(int d, int side, int cat, ac_counters *th, uint64_t n)
{
    ac_events_removed(&s_dom[d], n);
    ac_level(&s_dom[d], -(int64_t)n);
    ac_events_removed(&s_side[side].cat[cat], n);
    ac_side_delta(side, cat, -(int64_t)n);
    ac_events_removed(th, n);
    ac_level(th, -(int64_t)n);
}

AC_INLINE void ac_account_resized(int d, int side, int cat, ac_counters *th, uint64_t old_n, uint64_t new_n)
{
    int64_t delta = (int64_t)new_n - (int64_t)old_n;
    ac_events_resized(&s_dom[d], old_n, new_n);
    ac_level(&s_dom[d], delta);
    ac_events_resized(&s_side[side].cat[cat], old_n, new_n);
    ac_side_delta(side, cat, delta);
    ac_events_resized(th, old_n, new_n);
    ac_level(th, delta);
}

/* ---------------------------------------------------------------- threads */

static void ac_thread_exit(void *arg)
{
    ac_thread *slot = arg;
    pthread_mutex_lock(&s_threads_mutex);
    slot->alive = 0;
    pthread_mutex_unlock(&s_threads_mutex);
    t_tls.slot = NULL;
}

static void ac_make_key(void) { (void)pthread_key_create(&s_thread_key, ac_thread_exit); }

static ac_thread *ac_thread_attach(ac_tls *t)
{
    pthread_once(&s_once, ac_make_key);
    ac_thread *slot = NULL;
    pthread_mutex_lock(&s_threads_mutex);
    for (ac_thread *it = s_threads; it != NULL; it = it->next) {
        if (!it->alive) {
            slot = it;
            break;
        }
    }
    if (slot == NULL) {
        slot = calloc(1, sizeof(ac_thread)); /* libc: never re-enters the hooks */
        if (slot == NULL) {
            pthread_mutex_unlock(&s_threads_mutex);
            return &s_orphan_slot;
        }
        slot->next = s_threads;
        __atomic_store_n(&s_threads, slot, __ATOMIC_RELEASE);
        s_thread_count++;
    }
    memset(&slot->c, 0, sizeof(slot->c));
    slot->ident = (uint64_t)pthread_self();
    slot->alive = 1;
    pthread_mutex_unlock(&s_threads_mutex);
    (void)pthread_setspecific(s_thread_key, slot);
    t->slot = slot;
    return slot;
}

AC_INLINE ac_thread *ac_self(ac_tls *t)
{
    return AC_LIKELY(t->slot != NULL) ? t->slot : ac_thread_attach(t);
}

/* fork: take our locks so the child never inherits one held by a thread that does not exist
 * there; in the child, only the forking thread survives, so every other slot is released.
 * The child keeps the parent's figures and table (its heap is a copy of the parent's). */
static void ac_atfork_prepare(void)
{
    pthread_mutex_lock(&s_threads_mutex);
    ac_lock();
}

static void ac_atfork_parent(void)
{
    ac_unlock();
    pthread_mutex_unlock(&s_threads_mutex);
}

static void ac_atfork_child(void)
{
    ac_unlock();
    for (ac_thread *it = s_threads; it != NULL; it = it->next) {
        if (it != t_tls.slot) it->alive = 0;
    }
    pthread_mutex_unlock(&s_threads_mutex);
}

/* ---------------------------------------------------------------- accounting */

/* The record functions are inlined into each domain's hook, so the side (and with it the
 * lock and the mode re-check) is a compile-time constant: the GIL side pays for neither. */
#define AC_STOPPED_MEANWHILE(side, d, mode) \
    ((side) == AC_SIDE_LOCKED && AC_UNLIKELY(AC_LOAD(s_dom_mode[d]) != (mode)))

AC_INLINE void ac_record_alloc(int d, ac_tls *t, void *p, size_t n, int mode)
{
    const int side = AC_SIDE_OF(d);
    ac_thread *th = ac_self(t);
    int cat = t->category;
    AC_SIDE_LOCK(side);
    /* A RAW hook may have raced with stop() on another thread; the GIL side cannot. */
    if (AC_STOPPED_MEANWHILE(side, d, mode)) goto done;
    if (mode == AC_MODE_EXACT) {
        uint64_t stale;
        int rc = ac_table_put(&s_side[side].table, (uintptr_t)p, AC_PACK(n, cat), &stale);
        if (AC_UNLIKELY(rc < 0)) {
            s_insert_failures++;
            goto done;
        }
        if (AC_UNLIKELY(rc > 0)) {
            /* The address was freed behind our back (e.g. by a nested call): retire it. */
            s_stale_entries++;
            ac_account_removed(d, side, AC_VALUE_CAT(stale), &th->c, AC_VALUE_SIZE(stale));
        }
        ac_account_added(d, side, cat, &th->c, n);
    } else {
        s_dom[d].allocations++;
        s_dom[d].bytes_allocated += n;
        s_side[side].cat[cat].allocations++;
        s_side[side].cat[cat].bytes_allocated += n;
        th->c.allocations++;
        th->c.bytes_allocated += n;
    }
done:
    AC_SIDE_UNLOCK(side);
}

/* Called BEFORE the real free: once the block is freed another thread may be handed the same
 * address and insert it, so our entry must be gone by then. */
AC_INLINE void ac_record_free(int d, ac_tls *t, void *p, int mode)
{
    const int side = AC_SIDE_OF(d);
    ac_thread *th = ac_self(t);
    AC_SIDE_LOCK(side);
    if (AC_STOPPED_MEANWHILE(side, d, mode)) goto done;
    if (mode == AC_MODE_EXACT) {
        uint64_t value;
        if (AC_LIKELY(ac_table_pop(&s_side[side].table, (uintptr_t)p, &value))) {
            ac_account_removed(d, side, AC_VALUE_CAT(value), &th->c, AC_VALUE_SIZE(value));
        } else {
            /* Allocated before start() (or untracked): no size to subtract. */
            s_dom[d].untracked_frees++;
            th->c.untracked_frees++;
        }
    } else {
        s_dom[d].frees++;
        th->c.frees++;
    }
done:
    AC_SIDE_UNLOCK(side);
}

/* ---------------------------------------------------------------- hooks */

AC_INLINE void ac_note_probe(ac_tls *t, int d)
{
    if (t->guard == AC_GUARD_PROBE) t->probe_seen |= 1u << d;
}

AC_INLINE void *ac_malloc(int d, size_t n)
{
    const PyMemAllocatorEx *o = &s_orig[d];
    ac_tls *t = &t_tls;
    int mode = AC_LOAD(s_dom_mode[d]);
    if (AC_UNLIKELY(t->guard | (mode == AC_MODE_OFF))) {
        ac_note_probe(t, d);
        return o->malloc(o->ctx, n);
    }
    /* pymalloc serves requests > 512 bytes with PyMem_RawMalloc: the guard makes that inner
     * call pass through, so one PyObject_Malloc(1000) is one allocation. */
    t->guard = AC_GUARD_HOOK;
    void *p = o->malloc(o->ctx, n);
    t->guard = 0;
    if (AC_LIKELY(p != NULL)) ac_record_alloc(d, t, p, n, mode); /* failures count nothing */
    return p;
}

AC_INLINE void *ac_calloc(int d, size_t nelem, size_t elsize)
{
    const PyMemAllocatorEx *o = &s_orig[d];
    ac_tls *t = &t_tls;
    int mode = AC_LOAD(s_dom_mode[d]);
    if (AC_UNLIKELY(t->guard | (mode == AC_MODE_OFF))) {
        ac_note_probe(t, d);
        return o->calloc(o->ctx, nelem, elsize);
    }
    t->guard = AC_GUARD_HOOK;
    void *p = o->calloc(o->ctx, nelem, elsize);
    t->guard = 0;
    /* The public wrappers reject nelem * elsize overflow before reaching us. */
    if (AC_LIKELY(p != NULL)) ac_record_alloc(d, t, p, nelem * elsize, mode);
    return p;
}

/* A RAW free inside one of our calls. Usually pymalloc releasing a large block it got with a
 * nested PyMem_RawMalloc, never counted. But a tool that wraps us (tracemalloc started after
 * alloccount) enters the RAW chain at its top from there and frees, through us, blocks of its
 * own that we did count (its trace entries): those must leave the table, or they would stay
 * as live blocks until the address is reused. So: remove if present, count nothing else. */
static void ac_nested_raw_free(ac_tls *t, void *p, int mode)
{
    const int side = AC_SIDE_OF(PYMEM_DOMAIN_RAW);
    uint64_t value;
    AC_SIDE_LOCK(side);
    if (AC_LOAD(s_dom_mode[PYMEM_DOMAIN_RAW]) == mode &&
        ac_table_pop(&s_side[side].table, (uintptr_t)p, &value)) {
        ac_account_removed(PYMEM_DOMAIN_RAW, side, AC_VALUE_CAT(value), &ac_self(t)->c, AC_VALUE_SIZE(value));
    }
    AC_SIDE_UNLOCK(side);
}

AC_INLINE void ac_free(int d, void *p)
{
    const PyMemAllocatorEx *o = &s_orig[d];
    ac_tls *t = &t_tls;
    int mode = AC_LOAD(s_dom_mode[d]);
    if (AC_UNLIKELY(t->guard | (mode == AC_MODE_OFF) | (p == NULL))) {
        ac_note_probe(t, d);
        if (d == PYMEM_DOMAIN_RAW && t->guard == AC_GUARD_HOOK && mode == AC_MODE_EXACT && p != NULL) {
            ac_nested_raw_free(t, p, mode);
        }
        o->free(o->ctx, p);
        return;
    }
    ac_record_free(d, t, p, mode);
    t->guard = AC_GUARD_HOOK;
    o->free(o->ctx, p);
    t->guard = 0;
}

static void *ac_realloc_slow(int d, ac_tls *t, void *p, size_t n, int mode);

AC_INLINE void *ac_realloc(int d, void *p, size_t n)
{
    const PyMemAllocatorEx *o = &s_orig[d];
    ac_tls *t = &t_tls;
    int mode = AC_LOAD(s_dom_mode[d]);
    if (AC_UNLIKELY(t->guard | (mode == AC_MODE_OFF))) {
        ac_note_probe(t, d);
        return o->realloc(o->ctx, p, n);
    }
    if (p == NULL) { /* realloc(NULL, n) is an allocation */
        t->guard = AC_GUARD_HOOK;
        void *q = o->realloc(o->ctx, NULL, n);
        t->guard = 0;
        if (q != NULL) ac_record_alloc(d, t, q, n, mode);
        return q;
    }
    return ac_realloc_slow(d, t, p, n, mode);
}

static void *ac_realloc_slow(int d, ac_tls *t, void *p, size_t n, int mode)
{
    const PyMemAllocatorEx *o = &s_orig[d];
    const int side = AC_SIDE_OF(d);
    ac_thread *th = ac_self(t);
    uint64_t old = 0;
    int found = 0;
    uint64_t session = 0;

    /* Remove the old entry first: if the block moves, its address can be handed to another
     * thread as soon as the real realloc returns.  A failed realloc re-inserts it. */
    if (mode == AC_MODE_EXACT) {
        AC_SIDE_LOCK(side);
        if (AC_LOAD(s_dom_mode[d]) == mode) found = ac_table_pop(&s_side[side].table, (uintptr_t)p, &old);
        session = AC_LOAD(s_session);
        AC_SIDE_UNLOCK(side);
    }

    t->guard = AC_GUARD_HOOK;
    void *q = o->realloc(o->ctx, p, n);
    t->guard = 0;

    AC_SIDE_LOCK(side);
    if (AC_UNLIKELY(AC_LOAD(s_dom_mode[d]) != mode)) goto done;
    /* stop() + start() on another thread while the real realloc ran (RAW, no GIL): the old
     * entry belonged to the previous session, so this session adopts the block instead. */
    if (AC_UNLIKELY(mode == AC_MODE_EXACT && session != AC_LOAD(s_session))) found = 0;
    if (mode != AC_MODE_EXACT) {
        if (q != NULL) {
            s_dom[d].reallocs++;
            s_dom[d].bytes_allocated += n;
            s_side[side].cat[t->category].reallocs++;
            s_side[side].cat[t->category].bytes_allocated += n;
            th->c.reallocs++;
            th->c.bytes_allocated += n;
        }
        goto done;
    }
    ac_table *table = &s_side[side].table;
    uint64_t stale;
    if (q == NULL) { /* failed: the old block is still live and still ours */
        if (found) (void)ac_table_put(table, (uintptr_t)p, old, &stale);
        goto done;
    }
    if (found) {
        /* A block keeps the category that allocated it. */
        uint64_t old_n = AC_VALUE_SIZE(old);
        int cat = AC_VALUE_CAT(old);
        if (ac_table_put(table, (uintptr_t)q, AC_PACK(n, cat), &stale) < 0) {
            /* Cannot track the new block: account it as freed. */
            s_insert_failures++;
            ac_account_removed(d, side, cat, &th->c, old_n);
            goto done;
        }
        ac_account_resized(d, side, cat, &th->c, old_n, n);
    } else {
        /* Realloc of a block from before start(): it is adopted as a new allocation (as
         * tracemalloc does) and its old address counts as an untracked free, which keeps
         * allocations - frees == live blocks. */
        int cat = t->category;
        if (ac_table_put(table, (uintptr_t)q, AC_PACK(n, cat), &stale) < 0) {
            s_insert_failures++;
            goto done;
        }
        ac_account_added(d, side, cat, &th->c, n);
        s_dom[d].reallocs++;
        s_dom[d].untracked_frees++;
        s_side[side].cat[cat].reallocs++;
        th->c.reallocs++;
        th->c.untracked_frees++;
    }
done:
    AC_SIDE_UNLOCK(side);
    return q;
}

#define AC_DEFINE_HOOKS(name, D)                                                                  \
    static void *ac_malloc_##name(void *ctx, size_t n)                                            \
    {                                                                                             \
        (void)ctx; /* gh-128679: ctx may be stale; each domain reads its own saved allocator */   \
        return ac_malloc(D, n);                                                                   \
    }                                                                                             \
    static void *ac_calloc_##name(void *ctx, size_t nelem, size_t elsize)                         \
    {                                                                                             \
        (void)ctx;                                                                                \
        return ac_calloc(D, nelem, elsize);                                                       \
    }                                                                                             \
    static void *ac_realloc_##name(void *ctx, void *p, size_t n)                                  \
    {                                                                                             \
        (void)ctx;                                                                                \
        return ac_realloc(D, p, n);                                                               \
    }                                                                                             \
    static void ac_free_##name(void *ctx, void *p)                                                \
    {                                                                                             \
        (void)ctx;                                                                                \
        ac_free(D, p);                                                                            \
    }
AC_FOR_EACH_DOMAIN(AC_DEFINE_HOOKS)

/* Static forever: other tools save copies of these and call them after we "stop". */
static PyMemAllocatorEx s_hooks[AC_NDOMAINS] = {
#define AC_HOOK_ENTRY(name, D) [D] = {NULL, ac_malloc_##name, ac_calloc_##name, ac_realloc_##name, ac_free_##name},
    AC_FOR_EACH_DOMAIN(AC_HOOK_ENTRY)
#undef AC_HOOK_ENTRY
};

/* ---------------------------------------------------------------- lifecycle */

static int ac_on_top(int d)
{
    PyMemAllocatorEx cur;
    PyMem_GetAllocator((PyMemAllocatorDomain)d, &cur);
    return cur.malloc == s_hooks[d].malloc;
}

unsigned ac_probe(unsigned mask)
{
    ac_tls *t = &t_tls;
    int saved = t->guard;
    t->guard = AC_GUARD_PROBE;
    t->probe_seen = 0;
    if (mask & (1u << PYMEM_DOMAIN_RAW)) PyMem_RawFree(PyMem_RawMalloc(8));
    if (mask & (1u << PYMEM_DOMAIN_MEM)) PyMem_Free(PyMem_Malloc(8));
    if (mask & (1u << PYMEM_DOMAIN_OBJ)) PyObject_Free(PyObject_Malloc(8));
    t->guard = saved;
    return t->probe_seen & mask;
}

static void ac_reset_counters(void)
{
    /* Every writer holds the GIL (GIL side) or the spinlock (locked side), and the caller
     * holds the GIL: taking the spinlock and the thread registry stops all of them. */
    pthread_mutex_lock(&s_threads_mutex);
    ac_lock();
    memset(s_dom, 0, sizeof(s_dom));
    for (int side = 0; side < 2; side++) {
        s_side[side].current = 0;
        s_side[side].peak = 0;
        memset(s_side[side].cat, 0, sizeof(s_side[side].cat));
    }
    for (ac_thread *it = s_threads; it != NULL; it = it->next) memset(&it->c, 0, sizeof(it->c));
    s_insert_failures = 0;
    s_stale_entries = 0;
    ac_unlock();
    pthread_mutex_unlock(&s_threads_mutex);
}

static void ac_free_tables(void)
{
    ac_table_free(&s_side[AC_SIDE_GIL].table);
    ac_lock();
    ac_table_free(&s_side[AC_SIDE_LOCKED].table);
    ac_unlock();
}

static pthread_once_t s_atfork_once = PTHREAD_ONCE_INIT;
static void ac_register_atfork(void)
{
    (void)pthread_atfork(ac_atfork_prepare, ac_atfork_parent, ac_atfork_child);
}

int ac_start(int mode, unsigned mask, const char **err)
{
    if (mode != AC_MODE_EXACT && mode != AC_MODE_COUNTS) {
        *err = "unknown mode";
        return -1;
    }
    if (mask == 0 || (mask & ~AC_ALL_DOMAINS)) {
        *err = "invalid domain mask";
        return -1;
    }
    if (s_mode != AC_MODE_OFF) {
        *err = "already tracking";
        return -1;
    }
    pthread_once(&s_atfork_once, ac_register_atfork);
    pthread_once(&s_once, ac_make_key);

    /* Hooks left in the chain as pass-through by an earlier stop(): keep them if calls still
     * reach them, forget them if a tool below us dropped them when it stopped. */
    unsigned reached = ac_probe(s_installed_mask);
    s_installed_mask &= reached;

    if (mode == AC_MODE_EXACT) {
        ac_free_tables();
        if (ac_table_init(&s_side[AC_SIDE_GIL].table, AC_TABLE_MIN_CAPACITY) < 0 ||
            ac_table_init(&s_side[AC_SIDE_LOCKED].table, AC_TABLE_MIN_CAPACITY) < 0) {
            ac_free_tables();
            *err = "out of memory for the pointer table";
            return -1;
        }
    }
    ac_reset_counters();
    ac_lock();
    s_session++;
    ac_unlock();
    for (int d = 0; d < AC_NDOMAINS; d++) {
        if (!(mask & (1u << d)) || (s_installed_mask & (1u << d))) continue;
        /* Wrap, never replace: forward to whatever is installed now. */
        PyMem_GetAllocator((PyMemAllocatorDomain)d, &s_orig[d]);
        PyMem_SetAllocator((PyMemAllocatorDomain)d, &s_hooks[d]);
        s_installed_mask |= 1u << d;
    }
    s_counting_mask = mask;
    s_mode = mode;
    for (int d = 0; d < AC_NDOMAINS; d++) {
        if (mask & (1u << d)) __atomic_store_n(&s_dom_mode[d], mode, __ATOMIC_RELEASE);
    }
    return 0;
}

unsigned ac_stop(void)
{
    for (int d = 0; d < AC_NDOMAINS; d++) __atomic_store_n(&s_dom_mode[d], AC_MODE_OFF, __ATOMIC_RELEASE);
    s_mode = AC_MODE_OFF;
    unsigned stuck = 0;
    for (int d = 0; d < AC_NDOMAINS; d++) {
        unsigned bit = 1u << d;
        if (!(s_installed_mask & bit)) continue;
        if (ac_on_top(d)) {
            PyMem_SetAllocator((PyMemAllocatorDomain)d, &s_orig[d]);
            s_installed_mask &= ~bit;
        } else if (ac_probe(bit)) {
            /* Someone wrapped us and will restore our hooks when it stops: unlinking now would
             * break it, so stay in the chain as a pass-through. */
            stuck |= bit;
        } else {
            s_installed_mask &= ~bit; /* already dropped by a tool below us */
        }
    }
    /* Wait out any RAW hook still counting (it rechecks the mode under the lock). */
    ac_free_tables();
    return stuck;
}

int ac_mode(void) { return s_mode; }
unsigned ac_counting_mask(void) { return s_mode == AC_MODE_OFF ? 0 : s_counting_mask; }

void ac_reset_peak(void)
{
    ac_lock();
    for (int d = 0; d < AC_NDOMAINS; d++) s_dom[d].peak_bytes = s_dom[d].current_bytes;
    int64_t total = s_side[0].current + s_side[1].current;
    for (int side = 0; side < 2; side++) {
        s_side[side].peak = total;
        for (int c = 0; c < AC_MAX_CATEGORIES; c++) {
            s_side[side].cat[c].peak_bytes = s_side[0].cat[c].current_bytes + s_side[1].cat[c].current_bytes;
        }
    }
    ac_unlock();
}

/* ---------------------------------------------------------------- reads */

static void ac_load_counters(const ac_counters *src, ac_counters *out)
{
    out->allocations = AC_LOAD(src->allocations);
    out->frees = AC_LOAD(src->frees);
    out->reallocs = AC_LOAD(src->reallocs);
    out->bytes_allocated = AC_LOAD(src->bytes_allocated);
    out->bytes_freed = AC_LOAD(src->bytes_freed);
    out->current_bytes = AC_LOAD(src->current_bytes);
    out->peak_bytes = AC_LOAD(src->peak_bytes);
    out->untracked_frees = AC_LOAD(src->untracked_frees);
}

static void ac_add_counters(ac_counters *acc, const ac_counters *c)
{
    acc->allocations += c->allocations;
    acc->frees += c->frees;
    acc->reallocs += c->reallocs;
    acc->bytes_allocated += c->bytes_allocated;
    acc->bytes_freed += c->bytes_freed;
    acc->current_bytes += c->current_bytes;
    acc->untracked_frees += c->untracked_frees;
}

void ac_read_domain(int d, ac_counters *out) { ac_load_counters(&s_dom[d], out); }

void ac_read_total(ac_counters *out)
{
    memset(out, 0, sizeof(*out));
    for (int d = 0; d < AC_NDOMAINS; d++) {
        ac_counters c;
        ac_load_counters(&s_dom[d], &c);
        ac_add_counters(out, &c);
    }
    out->current_bytes = ac_current_bytes();
    out->peak_bytes = ac_peak_bytes();
}

int64_t ac_current_bytes(void) { return AC_LOAD(s_side[0].current) + AC_LOAD(s_side[1].current); }

int64_t ac_peak_bytes(void)
{
    int64_t a = AC_LOAD(s_side[0].peak), b = AC_LOAD(s_side[1].peak);
    return a > b ? a : b;
}

uint64_t ac_allocations(void)
{
    return AC_LOAD(s_dom[0].allocations) + AC_LOAD(s_dom[1].allocations) + AC_LOAD(s_dom[2].allocations);
}

uint64_t ac_frees(void) { return AC_LOAD(s_dom[0].frees) + AC_LOAD(s_dom[1].frees) + AC_LOAD(s_dom[2].frees); }

void ac_read_category(int c, ac_counters *out)
{
    memset(out, 0, sizeof(*out));
    if (c < 0 || c >= AC_MAX_CATEGORIES) return;
    ac_counters a, b;
    ac_load_counters(&s_side[0].cat[c], &a);
    ac_load_counters(&s_side[1].cat[c], &b);
    ac_add_counters(out, &a);
    ac_add_counters(out, &b);
    out->peak_bytes = a.peak_bytes > b.peak_bytes ? a.peak_bytes : b.peak_bytes;
}

void ac_read_engine_info(ac_engine_info *out)
{
    memset(out, 0, sizeof(*out));
    out->mode = s_mode;
    out->installed_mask = s_installed_mask;
    out->counting_mask = ac_counting_mask();
    out->gil_side_locked = AC_GIL_SIDE_LOCKED;
    ac_lock();
    for (int side = 0; side < 2; side++) {
        const ac_table *t = &s_side[side].table;
        out->table_capacity[side] = t->slots ? t->capacity : 0;
        out->table_count[side] = t->slots ? t->count : 0;
        out->table_bytes += out->table_capacity[side] * sizeof(ac_slot);
    }
    out->table_insert_failures = s_insert_failures;
    out->stale_entries = s_stale_entries;
    ac_unlock();
    out->threads = s_thread_count;
    out->categories = (size_t)s_max_category;
}

/* ---------------------------------------------------------------- categories and threads */

int ac_set_category(int c)
{
    if (c < 0 || c >= AC_MAX_CATEGORIES) return -1;
    int prev = t_tls.category;
    t_tls.category = c;
    return prev;
}

int ac_get_category(void) { return t_tls.category; }

void ac_note_category(int c)
{
    if (c >= s_max_category && c < AC_MAX_CATEGORIES) s_max_category = c + 1;
}

void ac_read_self(ac_counters *out) { ac_load_counters(&ac_self(&t_tls)->c, out); }

void ac_self_reset_peak(void)
{
    ac_thread *th = ac_self(&t_tls);
    /* The owner's RAW hooks write this slot under the spinlock. */
    ac_lock();
    th->c.peak_bytes = th->c.current_bytes;
    ac_unlock();
}

size_t ac_read_threads(ac_thread_figures *out, size_t max)
{
    size_t n = 0;
    pthread_mutex_lock(&s_threads_mutex);
    for (ac_thread *it = s_threads; it != NULL; it = it->next) {
        if (!it->alive) continue;
        if (n < max) {
            out[n].ident = it->ident;
            out[n].alive = 1;
            ac_load_counters(&it->c, &out[n].counters);
        }
        n++;
    }
    pthread_mutex_unlock(&s_threads_mutex);
    return n;
}
