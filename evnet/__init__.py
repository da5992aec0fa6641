"""evnet: an EV charging network on Twisted."""
__version__ = "0.1.0"
