"""``twistd evcentral``: options and service wiring for EV_Central."""

from twisted.application import service, strports
from twisted.python import usage

from evnet.protocols.link import LinkFactory, LinkHandler


class Options(usage.Options):
    synopsis = "--listen ENDPOINT [options]"
    longdesc = (
        "EV_Central: registers and authenticates charging points, authorizes drivers' "
        "charges and issues their tickets. Every address is a Twisted endpoint string, "
        "e.g. tcp:7000:interface=127.0.0.1."
    )
    optParameters = [
        ["listen", "l", "tcp:7000:interface=127.0.0.1", "Endpoint where Monitors connect."],
    ]


class _EchoHandler(LinkHandler):
    pass


def makeService(options: Options) -> service.MultiService:
    top = service.MultiService()
    strports.service(options["listen"], LinkFactory(_EchoHandler(), initiator=False)).setServiceParent(top)
    return top
