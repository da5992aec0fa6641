"""
The Engine's state write on the reactor thread against off it: a real
reactor runs a 1 ms timer (what the Engine's link and ticks would need)
while the Engine's snapshot is saved C{--writes} times, one after the other
(as the Engine does: one in flight), either inline (``StateFile.save`` on
the reactor thread, what the Engine did before) or through
``StateWriter`` (its one-thread pool).  Prints, per write, the time the
reactor thread was blocked in it and the wall time to disk, and the timer's
lateness (p50/p99/max): how long the reactor could not answer anything.
Not a test: it prints figures (docs/performance.md).

    .venv/bin/python benchmarks/statefile_bench.py [--writes N] [--dir DIR]
"""

import argparse
import os
import platform
import statistics
import tempfile
import time

from twisted.internet import defer, reactor, task

from evnet.engine.statefile import StateFile, StateWriter

SNAPSHOT = {
    "version": 1,
    "saved_at": 1764280000.0,
    "cp_id": "CP0042",
    "price": 0.35,
    "session": {
        "session_id": "S1f2e3d4c5b", "driver_id": "D1", "price": 0.35, "target_kwh": 0.0,
        "target_seconds": 0, "phase": "supplying", "seq": 42, "kwh": 0.1283, "seconds": 42.0,
    },
    "pending_stops": [],
}


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))] if values else 0.0


class Lag:
    """A 1 ms LoopingCall recording how late each call came (ms)."""

    def __init__(self):
        self.late = []
        self._last = None
        self.loop = task.LoopingCall(self._beat)

    def _beat(self):
        now = time.perf_counter()
        if self._last is not None:
            self.late.append(max(0.0, (now - self._last - 0.001) * 1000))
        self._last = now

    def start(self):
        self.loop.start(0.001)

    def stop(self):
        self.loop.stop()


async def inline(store, writes):
    blocked, lag = [], Lag()
    lag.start()
    for _ in range(writes):
        t = time.perf_counter()
        store.save(dict(SNAPSHOT, saved_at=time.time()))
        blocked.append(time.perf_counter() - t)
        await task.deferLater(reactor, 0.002, lambda: None)  # let the timer run between writes
    lag.stop()
    return blocked, blocked, lag.late


async def threaded(store, writes):
    writer = StateWriter(store, reactor)
    writer.start()
    blocked, walls, lag = [], [], Lag()
    lag.start()
    try:
        for _ in range(writes):
            t = time.perf_counter()
            d = writer.save(dict(SNAPSHOT, saved_at=time.time()))
            blocked.append(time.perf_counter() - t)  # the reactor's part: hand it over
            await d
            walls.append(time.perf_counter() - t)
            await task.deferLater(reactor, 0.002, lambda: None)
    finally:
        lag.stop()
        writer.stop()
    return blocked, walls, lag.late


async def main(args):
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        store = StateFile(directory)
        print(f"{args.writes} writes of the Engine's snapshot in {directory} "
              f"({platform.python_implementation()} {platform.python_version()}, "
              f"load average {os.getloadavg()[0]:.2f})")
        print(f"{'mode':<22} {'blocked µs/write':>17} {'to disk ms p50/p99':>19} {'1 ms timer late ms p50/p99/max':>31}")
        for _ in range(args.rounds):  # A/B/A/B: both see the same load
            for name, fn in (("on the reactor", inline), ("StateWriter (thread)", threaded)):
                blocked, walls, late = await fn(store, args.writes)
                print(f"{name:<22} {statistics.mean(blocked) * 1e6:>17.1f} "
                      f"{pct(walls, 50) * 1000:>9.2f}/{pct(walls, 99) * 1000:<9.2f} "
                      f"{pct(late, 50):>13.2f}/{pct(late, 99):.2f}/{max(late):.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--writes", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dir", default=".", help="where the temporary state directory goes (the disk measured) [.]")
    args = parser.parse_args()
    task.react(lambda _: defer.ensureDeferred(main(args)))
