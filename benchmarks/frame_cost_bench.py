"""
Central's own CPU per received frame, in process: what its reactor thread
spends on a frame beyond the socket I/O, against a bare echo protocol fed
the same bytes.  Not a test: it prints figures (docs/performance.md, issue 18).

    .venv/bin/python benchmarks/frame_cost_bench.py [--cps 100] [--frames 20000] [--runs 5]

Central's rules run on a fake clock and an in-memory store (the unit tests'
world: tests/test_central.py), with C{--cps} CPs logged in on fake
transports; each CP's Monitor sends sealed STATUS OK frames that change
nothing (the hot path: 10,000 CPs at 1 Hz are 10,000 of them a second).
The frames are sealed before the clock starts (sealing is the CP's work).
Socket I/O (recv, send of the ACK byte, epoll) is not in these figures: the
load generator's echo/flood runs measure the whole (docs/performance.md).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet.protocol import Protocol  # noqa: E402
from twisted.internet.testing import StringTransport  # noqa: E402

from benchmarks.codec_bench import best_of  # noqa: E402
from evnet.protocols import messages as m, security  # noqa: E402
from evnet.protocols.framing import FrameDecoder, encode_frame  # noqa: E402
from tests.test_central import World  # noqa: E402


class Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


def sealed_status_frames(cps, per_cp: int) -> list[list[bytes]]:
    return [[encode_frame(security.seal_message(cp.sealer, m.Status(cp.cp_id, "OK")).to_data()) for _ in range(per_cp)]
            for cp in cps]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--cps", type=int, default=100)
    parser.add_argument("--frames", type=int, default=20_000, help="STATUS frames per run (all CPs together)")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    per_cp = max(1, args.frames // args.cps)
    n = per_cp * args.cps

    world = World(liveness=1e9)  # no liveness timer fires: the clock does not move
    cps = [world.cp(f"CP{i:05d}") for i in range(args.cps)]
    for cp in cps:
        cp.take()
    links = [(cp.link, cp.transport) for cp in cps]
    batches = iter(())

    def prepare():
        nonlocal batches
        batches = sealed_status_frames(cps, per_cp)

    def central_status():
        for k in range(per_cp):
            for (link, transport), frames in zip(links, batches):
                link.dataReceived(frames[k])
                transport.clear()

    sample = encode_frame(security.seal_message(cps[0].sealer, m.Status(cps[0].cp_id, "OK")).to_data())
    echoes = []
    for _ in range(args.cps):
        echo = Echo()
        echo.makeConnection(StringTransport())
        echoes.append(echo)

    def echo_status():
        for _ in range(per_cp):
            for echo in echoes:
                echo.dataReceived(sample)
                echo.transport.clear()

    opener = security.Opener(cps[0].cp_id, cps[0].key_id, cps[0].key, (security.ROLE_MONITOR,))
    frames0 = [encode_frame(security.seal_message(cps[0].sealer, m.Status(cps[0].cp_id, "OK")).to_data())
               for _ in range(n)]
    parsed0 = [m.decode(f[1:-2]) for f in frames0]

    def framing_only():
        decoder = FrameDecoder()
        for f in frames0:
            decoder.feed(f)

    def decode_sec():
        for f in frames0:
            m.decode(f[1:-2])

    def open_inner():
        opener._last.clear()
        for s in parsed0:
            security.open_message(opener, s)

    plain0 = [m.Status(cps[0].cp_id, "OK").to_data()] * n

    def decode_plain():
        for data in plain0:
            m.decode(data)

    print(f"evnet frame cost benchmark: {n} sealed STATUS frames of {len(sample)} bytes over {args.cps} CPs, "
          f"best of {args.runs}; Python {platform.python_version()} on {platform.machine()}, "
          f"load average {os.getloadavg()[0]:.2f}")
    results = {}
    for name, fn, setup in [
        ("bare echo protocol (write the frame back)", echo_status, None),
        ("Central: sealed STATUS OK, nothing changes", central_status, prepare),
        ("  of which: frame decoding (LRC checked)", framing_only, None),
        ("  of which: decode the SEC message", decode_sec, None),
        ("  of which: open (AES-GCM) + decode STATUS", open_inner, None),
        ("decode a plain STATUS (no SEC, no opening)", decode_plain, None),
    ]:
        times = []
        for _ in range(args.runs):
            if setup:
                setup()
            times.append(best_of(1, fn))
        seconds = min(times)
        results[name] = seconds / n * 1e6
        print(f"  {name:48s} {results[name]:7.2f} us/frame  {n / seconds:>10,.0f} frames/s")
    sealing = (results["  of which: decode the SEC message"] + results["  of which: open (AES-GCM) + decode STATUS"]
               - results["decode a plain STATUS (no SEC, no opening)"])
    print(f"  what sealing adds to a received STATUS (SEC decode + open - plain decode): {sealing:.2f} us/frame")


if __name__ == "__main__":
    main()
