"""Memory per live block: pointer-table bytes (exact mode) and RSS growth, in this fresh process.

Usage::

    python bench/table_memory.py CONFIG LIVE_BLOCKS

Installs CONFIG (``untracked``, ``exact``, ``counts`` or ``tracemalloc``), then keeps LIVE_BLOCKS
small objects alive (distinct floats: one 24-byte pymalloc block each, plus an 8-byte slot in one
list) and prints one JSON object with the RSS growth (``/proc/self/statm``) and, under alloccount,
``engine_info()``'s ``table_bytes`` and ``tracked_blocks``. ``overhead.py`` runs it once per
(config, size) and subtracts the untracked RSS growth to get what tracking adds per block.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from typing import List, Optional

import _configs

TABLE_MEMORY_CONFIGS = ["untracked", "exact", "counts", "tracemalloc"]
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> Optional[int]:
    """Resident set size of this process, or None where /proc is not available."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * _PAGE_BYTES
    except OSError:
        return None


def measure(config: str, live_blocks: int) -> dict:
    """Keep ``live_blocks`` floats alive under ``config``; return RSS and table figures."""
    with _configs.activate(config) as config_info:
        gc.collect()
        rss_before_bytes = rss_bytes()
        live = [i * 0.5 for i in range(live_blocks)]
        gc.collect()
        rss_after_bytes = rss_bytes()
        table_bytes = tracked_blocks = None
        if config in ("exact", "counts"):
            import alloccount

            engine_info = alloccount.engine_info()
            table_bytes = engine_info.get("table_bytes")
            tracked_blocks = engine_info.get("tracked_blocks")
        del live
    rss_growth_bytes = None
    if rss_before_bytes is not None and rss_after_bytes is not None:
        rss_growth_bytes = rss_after_bytes - rss_before_bytes
    return {
        "config": config,
        "live_blocks": live_blocks,
        "rss_before_bytes": rss_before_bytes,
        "rss_after_bytes": rss_after_bytes,
        "rss_growth_bytes": rss_growth_bytes,
        "rss_growth_per_block_bytes": None if rss_growth_bytes is None else rss_growth_bytes / live_blocks,
        "table_bytes": table_bytes,
        "tracked_blocks": tracked_blocks,
        "table_bytes_per_tracked_block": (table_bytes / tracked_blocks) if table_bytes and tracked_blocks else None,
        "config_info": config_info,
    }


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", choices=TABLE_MEMORY_CONFIGS)
    parser.add_argument("live_blocks", type=int)
    args = parser.parse_args(argv)
    json.dump(measure(args.config, args.live_blocks), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
