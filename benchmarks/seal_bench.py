"""
Encryption cost: messages per second on one core to seal a typical TELEM
(``security.seal_message``: AES-256-GCM, base64, the SEC message), to open
it (``security.open_message``: parse, replay check, decrypt, decode the
message inside), and, for reference, to decode the plain message.  The
frame layer (STX/ETX/LRC) is the same either way and left out (see
codec_bench.py).  Also one login's scrypt (the PROOF), the Monitor's cost.
Not a test: it prints figures (docs/performance.md).

    .venv/bin/python benchmarks/seal_bench.py [--frames N] [--runs R]
"""

import argparse
import platform
import time

from evnet.protocols import messages as m
from evnet.protocols import security

TELEM = m.Telem("CP0042", "S4f2a91c0de", 1234, 12.345, 11.0, 4.32, 1234)
KEY_ID, KEY = "0a1b2c3d", bytes(range(32, 64))


def best_of(runs, fn):
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    n = args.frames
    plain = TELEM.to_data()

    def seal():
        sealer = security.Sealer(TELEM.cp_id, KEY_ID, KEY, security.ROLE_MONITOR)
        for _ in range(n):
            security.seal_message(sealer, TELEM).to_data()

    # Open needs n distinct frames (the counter must rise): sealed once, outside the timing.
    sealer = security.Sealer(TELEM.cp_id, KEY_ID, KEY, security.ROLE_MONITOR)
    sealed = [security.seal_message(sealer, TELEM).to_data() for _ in range(n)]

    def open_():
        opener = security.Opener(TELEM.cp_id, KEY_ID, KEY, (security.ROLE_MONITOR, security.ROLE_ENGINE))
        for data in sealed:
            got = security.open_message(opener, m.decode(data))
        assert got == TELEM

    def plain_decode():
        for _ in range(n):
            m.decode(plain)

    print(f"Python {platform.python_version()} on {platform.machine()}, {n} messages, best of {args.runs}")
    print(f"TELEM DATA {len(plain)} bytes plain, {len(sealed[0])} sealed")
    for name, fn in (("seal (SEC DATA)", seal), ("open (SEC DATA -> message)", open_), ("plain decode", plain_decode)):
        t = best_of(args.runs, fn)
        print(f"{name:28s} {n / t:>10,.0f} msg/s  {1e6 * t / n:6.1f} us/msg")
    salt = bytes(16)
    t = best_of(3, lambda: security.salted_secret("benchmark secret", salt))
    print(f"{'scrypt N=16384 (one login)':28s} {1 / t:>10,.1f} /s    {1e3 * t:6.1f} ms")


if __name__ == "__main__":
    main()
