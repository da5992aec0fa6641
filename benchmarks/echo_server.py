"""
The reference ceiling for docs/performance.md: a bare Twisted echo server.

Each connection gets back every byte it sends, at once, with no parsing: the
cost of Twisted's TCP I/O alone on this machine.  ``benchmarks/loadgen.py
--scenarios echo`` starts it, drives it with the same frames and the same
one-frame-in-flight pattern as the evnet link, and compares Central to it.

    .venv/bin/python benchmarks/echo_server.py --listen tcp:7900:interface=127.0.0.1 [--eager]

With C{--eager} it writes as evnet's links do (evnet.protocols.eager: sent at
once when nothing is buffered), for a comparison on equal writes.
"""

import argparse
import os
import resource
import sys

from twisted.internet import endpoints, reactor
from twisted.internet.protocol import Factory, Protocol

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from evnet.protocols import eager  # noqa: E402


class Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


class EagerEcho(Protocol):
    def dataReceived(self, data: bytes) -> None:
        eager.write(self.transport, data)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Bare Twisted echo server (the reference ceiling).")
    parser.add_argument("--listen", default="tcp:7900:interface=127.0.0.1", help="server endpoint string")
    parser.add_argument("--eager", action="store_true",
                        help="send each echo at once when nothing is buffered, as evnet's links do")
    args = parser.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    factory = Factory.forProtocol(EagerEcho if args.eager else Echo)
    factory.noisy = False
    try:
        endpoint = endpoints.serverFromString(reactor, args.listen)
    except (ValueError, TypeError) as e:
        print(f"echo_server: bad --listen {args.listen!r}: {e}", file=sys.stderr)
        return 2

    def failed(failure):
        print(f"echo_server: cannot listen on {args.listen}: {failure.getErrorMessage()}", file=sys.stderr)
        reactor.stop()

    def listening(port):
        print(f"echo server listening on {args.listen}", flush=True)

    endpoint.listen(factory).addCallbacks(listening, failed)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
