"""
OCPP 1.6J charge points at EV_Central (``twistd evcentral --ocpp ENDPOINT``).

- L{codec}: OCPP-J frames (CALL, CALLRESULT, CALLERROR) and their validation
  against the official OCPP 1.6 JSON schemas the ``ocpp`` package ships; pure.
- L{mapping}: what OCPP's values mean in evnet's model (statuses, meter
  values, stop reasons, timestamps); pure.
- L{calls}: Central's outgoing CALLs to one charge point, one at a time.
- L{station}: one charge point's conversation, an
  L{evnet.protocols.channel.IChannel} that Central speaks evnet to; it turns
  OCPP calls into evnet reports for L{evnet.central.rules.Central} and evnet
  commands into OCPP calls.
- L{transactions}: OCPP transaction ids and the sessions they are, in the store.
- L{auth}: security profiles 1 and 2 (HTTP Basic against the Registry's verifier).
- L{server}: the WebSocket server (autobahn on Twisted) and its service.

docs/ocpp.md says what is supported and how it maps.
"""
