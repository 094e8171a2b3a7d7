"""Built-in frame handlers, registered on the resolver every worker uses.

0x2100 (transparent): the info bytes go to the HES, as the reference's
``handle2100`` does with ``CurrentApp().client.send(data)``.
"""

from __future__ import annotations

from typing import Any

from common import rfc1662
from services.resolver import resolver


@resolver.register(rfc1662.PROTO_TRANSPARENT)
def handle_2100(app: Any, frame: rfc1662.Frame) -> None:
    """Meter data for the head-end system: forwarded as it is."""
    if frame.info:
        app.client.send(frame.info)
