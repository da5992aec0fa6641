"""twistd plugins for evnet: ``twistd evcentral``, ``evmonitor``, ``evengine``, ``evregistry``."""

from twisted.application.service import ServiceMaker

evcentral = ServiceMaker(
    "EV_Central", "evnet.central.tap", "EV_Central: the charging network's control centre.", "evcentral"
)
evmonitor = ServiceMaker(
    "EV_CP_M", "evnet.monitor.tap", "EV_CP_M: a charging point's Monitor (speaks for it to Central).", "evmonitor"
)
evengine = ServiceMaker(
    "EV_CP_E", "evnet.engine.tap", "EV_CP_E: a charging point's Engine (the charger itself).", "evengine"
)
evregistry = ServiceMaker(
    "EV_Registry", "evnet.registry.tap", "EV_Registry: registers and deregisters charging points (HTTPS API).", "evregistry"
)
