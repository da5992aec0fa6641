"""``twistd evcentral``: options and service wiring for EV_Central."""

from twisted.application import service, strports
from twisted.python import usage

from evnet.protocols.link import LinkFactory
from evnet.services.central import Central
from evnet.services.store import Store, StoreError, parse_db_url


class Options(usage.Options):
    synopsis = "[--listen ENDPOINT] [--drivers ENDPOINT] [--db URL] [options]"
    longdesc = (
        "EV_Central: registers and authenticates charging points (their Monitors connect to "
        "--listen), authorizes drivers' charges (drivers connect to --drivers), follows every "
        "charge and issues its ticket, and keeps everything in its database so a restart "
        "rebuilds the state. Addresses are Twisted endpoint strings, e.g. "
        "tcp:7000:interface=127.0.0.1 (loopback only) or tcp:7000 (every interface)."
    )
    optParameters = [
        ["listen", "l", "tcp:7000:interface=127.0.0.1", "Endpoint where Monitors connect."],
        ["drivers", "d", "tcp:7001:interface=127.0.0.1", "Endpoint where drivers connect (in-band mode)."],
        ["db", None, "sqlite:evcentral.db",
         "Database: sqlite:PATH (embedded) or mysql://user:password@host:port/dbname."],
        ["liveness-timeout", None, "3", "Seconds without a Monitor's STATUS before its CP is DESCONECTADO."],
        ["max-frame", None, "4096", "Largest frame DATA accepted, in bytes."],
    ]

    def postOptions(self) -> None:
        try:
            self["db_url"] = parse_db_url(self["db"])
        except ValueError as e:
            raise usage.UsageError(f"--db: {e}")
        for name, minimum in (("liveness-timeout", 0.1), ("max-frame", 64)):
            try:
                value = float(self[name])
            except ValueError:
                raise usage.UsageError(f"--{name} must be a number, not {self[name]!r}")
            if value < minimum:
                raise usage.UsageError(f"--{name} must be at least {minimum:g}")
            self[name] = value


def makeService(options: Options) -> service.MultiService:
    from twisted.internet import reactor

    try:
        store = Store(options["db_url"])
    except StoreError as e:
        raise SystemExit(f"evcentral: {e}")
    central = Central(store, reactor, liveness_timeout=options["liveness-timeout"])
    link_options = {"max_data": int(options["max-frame"])}
    cp_factory = LinkFactory(central.cp_links, initiator=False, clock=reactor, **link_options)
    driver_factory = LinkFactory(central.driver_links_handler, initiator=False, clock=reactor, **link_options)
    strports.service(options["listen"], cp_factory).setServiceParent(central)
    strports.service(options["drivers"], driver_factory).setServiceParent(central)
    return central
