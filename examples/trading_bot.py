"""A small simulated trading bot with the four classic leaks, and their fixes.

    alloccount run --interval 0.1 examples/trading_bot.py --leaky   # names the leaking categories
    alloccount run --interval 0.1 examples/trading_bot.py --fixed   # reports none

Each component runs in its own alloccount category (when alloccount is tracking; the bot runs
without it too):

- ``prices``: a price cache. Leaky: every tick of every symbol is kept forever. Fixed: bounded
  by entries and by age.
- ``orders``: an order book. Leaky: the fill handler logs fills but never removes them.
  Fixed: removal on fill.
- ``strategies``: strategies and their manager reference each other. Like many latency-
  sensitive bots, this one runs with the cyclic GC disabled, so the leaky cycle is never
  collected. Fixed: the back-edge is a ``weakref``.
- ``subscribers``: each client session subscribes a callback to the price feed. Leaky: never
  unsubscribed (the forgotten channel). Fixed: unsubscribed when the session closes.

Load: ``--load N`` (or the environment variable ``ALLOCCOUNT_LOAD``, which ``alloccount
stress`` sets) multiplies the tick rate.
"""
from __future__ import annotations

import argparse
import array
import collections
import contextlib
import gc
import json
import os
import random
import time
import weakref
from dataclasses import dataclass, field
from typing import Callable, Deque, Dict, List, Optional

try:
    from alloccount import category as component  # costs nothing when not tracking
except ImportError:  # the bot runs without alloccount installed too

    def component(name: str):
        return contextlib.nullcontext()


SYMBOLS = ["BTC-USD", "ETH-USD", "SOL-USD", "XRP-USD", "ADA-USD", "DOGE-USD", "AVAX-USD", "DOT-USD"]
# Parsed ticks are transient: components keep the canonical symbol string and their own
# rounded floats, so what a component keeps is charged to that component's category.
CANONICAL = {symbol: symbol for symbol in SYMBOLS}


# ---------------------------------------------------------------- prices


class PriceCache:
    """Leaky: a dict of symbol -> list of every price ever seen."""

    def __init__(self) -> None:
        self.history: Dict[str, List[tuple]] = collections.defaultdict(list)

    def update(self, symbol: str, price: float, ts: float) -> None:
        self.history[symbol].append((ts, price))

    def last(self, symbol: str) -> Optional[float]:
        entries = self.history.get(symbol)
        return entries[-1][1] if entries else None


class BoundedPriceCache(PriceCache):
    """Fixed: at most ``max_entries`` per symbol and nothing older than ``max_age_s``."""

    def __init__(self, max_entries: int = 2_000, max_age_s: float = 2.0) -> None:
        super().__init__()
        self.max_age_s = max_age_s
        self.history = collections.defaultdict(lambda: collections.deque(maxlen=max_entries))  # type: ignore[assignment]

    def update(self, symbol: str, price: float, ts: float) -> None:
        entries = self.history[symbol]
        entries.append((ts, price))
        while entries and ts - entries[0][0] > self.max_age_s:
            entries.popleft()


# ---------------------------------------------------------------- orders


@dataclass
class Order:
    order_id: int
    symbol: str
    side: str
    price: float
    quantity: float
    notes: List[str] = field(default_factory=list)


class OrderBook:
    """Leaky: ``process_fills`` logs each fill but forgets to remove the order."""

    def __init__(self) -> None:
        self.orders: Dict[int, Order] = {}
        self.fills_seen = 0

    def add(self, order: Order) -> None:
        self.orders[order.order_id] = order

    def process_fills(self, filled_ids: List[int]) -> None:
        for order_id in filled_ids:
            order = self.orders.get(order_id)
            if order is not None:
                order.notes.append(f"filled at {order.price:.2f}")
                self.fills_seen += 1

    def open_ids(self) -> List[int]:
        return list(self.orders)[-64:]


class FixedOrderBook(OrderBook):
    """Fixed: a filled order is removed from the book."""

    def process_fills(self, filled_ids: List[int]) -> None:
        for order_id in filled_ids:
            if self.orders.pop(order_id, None) is not None:
                self.fills_seen += 1


# ---------------------------------------------------------------- strategies


class Strategy:
    def __init__(self, name: str, manager: "StrategyManager", weak: bool) -> None:
        self.name = name
        self.params = {"window": random.randint(5, 50), "threshold_bp": random.randint(1, 100)}
        # A packed array, not a list of floats: float objects go through CPython's float
        # free list, which reuses them across categories without an allocator call
        # (docs/categories.md, "Free lists").
        self.signals = array.array("d", bytes(8 * 64))
        # Leaky: strategy -> manager -> strategy is a cycle, never collected with gc disabled.
        self._manager = weakref.ref(manager) if weak else manager

    @property
    def manager(self) -> Optional["StrategyManager"]:
        return self._manager() if isinstance(self._manager, weakref.ref) else self._manager


class StrategyManager:
    def __init__(self, generation: int, weak: bool) -> None:
        self.generation = generation
        self.strategies = [Strategy(f"s{generation}-{i}", self, weak) for i in range(8)]


# ---------------------------------------------------------------- subscribers


class PriceFeed:
    def __init__(self) -> None:
        self.subscribers: List[Callable[[str, float], None]] = []

    def subscribe(self, callback: Callable[[str, float], None]) -> None:
        self.subscribers.append(callback)

    def unsubscribe(self, callback: Callable[[str, float], None]) -> None:
        self.subscribers.remove(callback)

    def publish(self, symbol: str, price: float) -> None:
        for callback in self.subscribers[-8:]:  # only recent sessions are active
            callback(symbol, price)


class ClientSession:
    def __init__(self, session_id: int) -> None:
        self.session_id = session_id
        self.buffer: List[float] = [0.0] * 256
        self.received = 0

    def on_price(self, symbol: str, price: float) -> None:
        self.received += 1


# ---------------------------------------------------------------- the bot


class Bot:
    def __init__(self, leaky: bool, seed: int = 7) -> None:
        self.leaky = leaky
        self.rng = random.Random(seed)
        self.prices = PriceCache() if leaky else BoundedPriceCache()
        self.book = OrderBook() if leaky else FixedOrderBook()
        self.feed = PriceFeed()
        self.manager: Optional[StrategyManager] = None
        self.next_order_id = 0
        self.generation = 0
        self.ticks = 0
        self.sessions: Deque[ClientSession] = collections.deque()

    def make_tick(self) -> str:
        with component("ticks"):
            symbol = self.rng.choice(SYMBOLS)
            price = 100.0 + self.rng.random() * 10
            return json.dumps({"symbol": symbol, "bid": price, "ask": price + 0.01, "ts": time.time()})

    def on_tick(self, raw: str) -> None:
        with component("ticks"):
            tick = json.loads(raw)
            symbol = CANONICAL[tick["symbol"]]
        with component("prices"):
            self.prices.update(symbol, round(tick["bid"], 4), round(tick["ts"], 3))
        with component("subscribers"):
            self.feed.publish(symbol, tick["bid"])
        with component("orders"):
            if self.rng.random() < 0.3:
                self.next_order_id += 1
                side = "buy" if self.rng.random() < 0.5 else "sell"
                self.book.add(Order(self.next_order_id, symbol, side, round(tick["bid"], 2), 1.0 + self.rng.random()))
            if self.ticks % 4 == 0:
                self.book.process_fills(self.book.open_ids()[:2])
        self.ticks += 1
        if self.ticks % 500 == 0:
            self.rebalance()
        if self.ticks % 200 == 0:
            self.client_churn()

    def rebalance(self) -> None:
        with component("strategies"):
            self.generation += 1
            # The previous manager is dropped: with the weak back-edge refcounting frees it;
            # with the strong one, the cycle survives (the cyclic GC is off).
            self.manager = StrategyManager(self.generation, weak=not self.leaky)

    def client_churn(self) -> None:
        with component("subscribers"):
            session = ClientSession(self.ticks)
            self.feed.subscribe(session.on_price)
            self.sessions.append(session)
            if len(self.sessions) > 4:  # a session closes
                closed = self.sessions.popleft()
                if not self.leaky:
                    self.feed.unsubscribe(closed.on_price)

    def run(self, duration_s: float, ticks_per_s: float) -> None:
        start = time.monotonic()
        batch = max(1, int(ticks_per_s / 50))  # 50 bursts a second
        while time.monotonic() - start < duration_s:
            burst_start = time.monotonic()
            for _ in range(batch):
                self.on_tick(self.make_tick())
            time.sleep(max(0.0, 0.02 - (time.monotonic() - burst_start)))


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--leaky", action="store_true", help="run with the four leaks (default)")
    mode.add_argument("--fixed", action="store_true", help="run with their fixes")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds to run (default 10)")
    parser.add_argument("--rate", type=float, default=10_000, help="ticks per second at load 1 (default 10000)")
    parser.add_argument("--load", type=float, default=float(os.environ.get("ALLOCCOUNT_LOAD", "1")), help="tick-rate multiplier (default $ALLOCCOUNT_LOAD or 1)")
    options = parser.parse_args(argv)
    if options.duration <= 0 or options.rate <= 0 or options.load <= 0:
        parser.error("--duration, --rate and --load must be > 0")
    leaky = not options.fixed
    gc.disable()  # latency: no cyclic-GC pauses (which is why the strategy cycle leaks)
    bot = Bot(leaky=leaky)
    try:
        bot.run(options.duration, options.rate * options.load)
    except KeyboardInterrupt:  # a service stops cleanly on Ctrl-C (alloccount stress sends one)
        pass
    print(
        f"{'leaky' if leaky else 'fixed'} bot at load {options.load:g}: {bot.ticks:,} ticks, {len(bot.book.orders):,} orders in the book, "
        f"{bot.book.fills_seen:,} fills, {len(bot.feed.subscribers)} subscribers, {bot.generation} rebalances"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
