"""The smallest useful alloccount session: count what a loop allocates, and what it keeps."""
import alloccount

alloccount.start()  # mode="exact", domains="all"

history = []
for tick in range(100_000):
    quote = {"symbol": "BTC-USD", "price": 40_000 + tick * 0.5, "size": tick % 7}
    history.append(quote)  # an unbounded history: everything is kept
    if len(history) > 50_000:
        history.pop(0)

s = alloccount.stats()
print(s)
print(f"{s.allocations:,} allocations, {s.current_bytes / 1e6:.1f} MB in use, peak {s.peak_bytes / 1e6:.1f} MB")
alloccount.stop()
