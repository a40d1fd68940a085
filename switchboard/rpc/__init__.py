"""RPC and notifications with oslo.messaging's semantics, over ``switchboard.client``.

See ``docs/rpc.md``; the wire format (addresses and envelopes) is ``wire.py``.
"""
