/*
 * alloccount engine: the C hot path.
 *
 * Hooks installed with PyMem_SetAllocator wrap whatever allocator was installed before
 * (pymalloc, tracemalloc, memray, ...) in the RAW, MEM and OBJ domains and count every
 * outermost allocation, free and realloc.  Everything here is plain C with no Python
 * objects: the Cython binding (_core.pyx) turns these structs into Python values.
 *
 * Concurrency model (see docs/engine.md):
 *  - "GIL side": MEM and OBJ on a GIL build are only ever called with the GIL held, so their
 *    counters and pointer table are plain memory, serialized by the GIL.
 *  - "locked side": RAW (called from any thread, with or without the GIL) has its own
 *    pointer table and counters behind a spinlock.  On a free-threaded build every domain
 *    is on the locked side.
 *  - per-thread slots (heap, never freed, reused after thread exit) hold the calling
 *    thread's own figures, written only by their owner.
 */
#ifndef ALLOCCOUNT_ENGINE_H
#define ALLOCCOUNT_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#define AC_NDOMAINS 3            /* indexed by PYMEM_DOMAIN_RAW (0), _MEM (1), _OBJ (2) */
#define AC_ALL_DOMAINS 0x7u
#define AC_MAX_CATEGORIES 1024   /* category ids 0..1023; id 0 is "<uncategorized>" */

enum ac_mode { AC_MODE_OFF = 0, AC_MODE_EXACT = 1, AC_MODE_COUNTS = 2 };

/* Figures for one domain, for all domains, or for one category. */
typedef struct {
    uint64_t allocations;      /* blocks allocated (realloc(NULL, n) included) */
    uint64_t frees;            /* frees of blocks allocated since start (counts mode: all frees) */
    uint64_t reallocs;         /* successful reallocs of a non-NULL pointer */
    uint64_t bytes_allocated;  /* bytes requested: malloc n, calloc n*size, realloc's new size */
    uint64_t bytes_freed;      /* exact mode: bytes of tracked blocks freed or reallocated away */
    int64_t current_bytes;     /* exact mode: bytes in tracked live blocks */
    int64_t peak_bytes;        /* exact mode: high-water mark of current_bytes */
    uint64_t untracked_frees;  /* exact mode: frees/reallocs of blocks allocated before start */
} ac_counters;

/* One thread's own figures (allocations it made, frees it made). */
typedef struct {
    uint64_t ident;            /* pthread_self(), equal to threading.get_ident() */
    int alive;
    ac_counters counters;      /* since the thread's first allocation in this session */
} ac_thread_figures;

typedef struct {
    int mode;                  /* enum ac_mode currently counting, 0 when stopped */
    unsigned installed_mask;   /* domains where our hooks are linked in the chain */
    unsigned counting_mask;    /* domains counted in this session */
    int gil_side_locked;       /* 1 on a free-threaded build: MEM/OBJ take the lock too */
    size_t table_capacity[2];  /* [0] GIL side (MEM+OBJ), [1] locked side (RAW) */
    size_t table_count[2];
    size_t table_bytes;        /* memory held by both pointer tables */
    uint64_t table_insert_failures; /* blocks not tracked because the table could not grow */
    uint64_t stale_entries;    /* table entries replaced by a new block at the same address */
    size_t threads;            /* per-thread slots ever created (reused after thread exit) */
    size_t categories;         /* highest category id in use + 1 */
} ac_engine_info;

/* Lifecycle.  Must be called with the GIL held.  Return 0 on success, -1 with *err set. */
int ac_start(int mode, unsigned domain_mask, const char **err);
/* Returns the mask of domains where our hooks could NOT be unlinked because another
 * allocator sits above them; those stay in the chain as pass-through. */
unsigned ac_stop(void);
/* Calls a tiny malloc/free in each domain of `mask` and returns the domains in which the
 * call reached our hooks (so a tool stopping below us that dropped us is detected). */
unsigned ac_probe(unsigned mask);
int ac_mode(void);
unsigned ac_counting_mask(void);
void ac_reset_peak(void);

/* Reads (lock-free, racy by design: each figure is a value it had at some instant). */
void ac_read_domain(int domain, ac_counters *out);
void ac_read_total(ac_counters *out);
int64_t ac_current_bytes(void);
int64_t ac_peak_bytes(void);
uint64_t ac_allocations(void);
uint64_t ac_frees(void);
void ac_read_category(int category, ac_counters *out);
void ac_read_engine_info(ac_engine_info *out);

/* Categories: the calling thread's current category id (0 = uncategorized). */
int ac_set_category(int category);  /* returns the previous id, -1 if out of range */
int ac_get_category(void);
void ac_note_category(int category); /* tell the engine an id is in use (for reads) */

/* Per-thread figures. */
void ac_read_self(ac_counters *out);       /* the calling thread's counters */
void ac_self_reset_peak(void);             /* calling thread: peak := current */
/* Fills up to `max` entries, returns the number of live threads with a slot. */
size_t ac_read_threads(ac_thread_figures *out, size_t max);

#endif /* ALLOCCOUNT_ENGINE_H */
