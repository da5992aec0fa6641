"""
Codec benchmark: frames per second to encode and to decode a typical TELEM
frame on one core.  Not a test: it prints figures (docs/performance.md).

    .venv/bin/python benchmarks/codec_bench.py [--frames N] [--chunk BYTES]
"""

import argparse
import platform
import time

from evnet.protocols.framing import FrameDecoder, encode_frame
from evnet.protocols.messages import Telem, decode

TELEM = Telem("CP0042", "S4f2a91c0de", 1234, 12.345, 11.0, 4.32, 1234)


def best_of(runs, fn):
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--frames", type=int, default=200_000)
    parser.add_argument("--chunk", type=int, default=65536, help="bytes per dataReceived-sized chunk")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    n = args.frames
    data = TELEM.to_data()
    frame = encode_frame(data)
    stream = frame * n
    chunks = [stream[i : i + args.chunk] for i in range(0, len(stream), args.chunk)]

    def frame_encode():
        for _ in range(n):
            encode_frame(data)

    def message_encode():
        for _ in range(n):
            encode_frame(TELEM.to_data())

    def frame_decode():
        d = FrameDecoder()
        count = 0
        for chunk in chunks:
            count += len(d.feed(chunk))
        assert count == n, count

    def full_decode():
        d = FrameDecoder()
        count = 0
        for chunk in chunks:
            for event in d.feed(chunk):
                decode(event.data)
                count += 1
        assert count == n

    print(f"evnet codec benchmark: {n} TELEM frames of {len(frame)} bytes, {args.chunk}-byte chunks, "
          f"best of {args.runs}; Python {platform.python_version()} on {platform.machine()}")
    for name, fn in [
        ("encode frame (DATA -> frame bytes)", frame_encode),
        ("encode message + frame", message_encode),
        ("decode frames (bytes -> DATA, LRC checked)", frame_decode),
        ("decode frames + messages (bytes -> Telem)", full_decode),
    ]:
        seconds = best_of(args.runs, fn)
        print(f"  {name:45s} {n / seconds:>12,.0f} frames/s")


if __name__ == "__main__":
    main()
