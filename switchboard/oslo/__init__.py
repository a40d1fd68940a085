"""The oslo.messaging driver: ``transport_url = switchboard://host1:5672,host2:5672/``.

oslo.messaging finds ``SwitchboardDriver`` through the ``oslo.messaging.drivers`` entry
point named ``switchboard``; nothing imports this package otherwise.  See ``docs/oslo.md``.
"""

from .driver import SwitchboardDriver

__all__ = ["SwitchboardDriver"]
