"""What an APDU is for, from its first octet: a response, a push, or something else.

The client's spool policy (``TCP_SERVER.spool.policy``) needs to know, for each payload
held while the HES was away, whether it answers a request (and so belongs to a
connection that no longer exists) or is something the meter sent on its own. The tag
says which; only a payload whose tag is a response's is decoded, to make sure it is one
whole APDU and not, say, the first part of a longer one that happens to start with the
same octet. No I/O.
"""

from __future__ import annotations

from typing import Final, Literal

from common.dlms.apdu import decode
from common.dlms.errors import DlmsError

__all__ = ["PUSH_TAGS", "RESPONSE_TAGS", "Kind", "is_whole_response", "kind_of"]

Kind = Literal["response", "push", "other"]

#: Tags of the APDUs a server sends in answer to a client's request.
RESPONSE_TAGS: Final[frozenset[int]] = frozenset(
    {
        0x08,  # initiate-response
        0x0E,  # confirmed-service-error
        0x28,  # glo-initiate-response
        0x2C,  # glo-read-response
        0x2D,  # glo-write-response
        0x2E,  # glo-confirmed-service-error
        0x48,  # ded-initiate-response
        0x4C,  # ded-read-response
        0x4D,  # ded-write-response
        0x4E,  # ded-confirmed-service-error
        0x61,  # aare
        0x63,  # rlre
        0xC4,  # get-response
        0xC5,  # set-response
        0xC7,  # action-response
        0xCC,  # glo-get-response
        0xCD,  # glo-set-response
        0xCF,  # glo-action-response
        0xD4,  # ded-get-response
        0xD5,  # ded-set-response
        0xD7,  # ded-action-response
        0xD8,  # exception-response
    }
)

#: Tags of the APDUs a server sends on its own (unsolicited).
PUSH_TAGS: Final[frozenset[int]] = frozenset(
    {
        0x0F,  # data-notification
        0xC2,  # event-notification-request
        0xCA,  # glo-event-notification-request
        0xD2,  # ded-event-notification-request
        0x38,  # glo-information-report-request
        0x58,  # ded-information-report-request
    }
)


def kind_of(apdu: bytes | bytearray | memoryview) -> Kind:
    """The kind the first octet announces (``other`` for empty data and for
    APDUs that may be either, such as general-glo-ciphering)."""
    if not apdu:
        return "other"
    tag = apdu[0]
    if tag in RESPONSE_TAGS:
        return "response"
    if tag in PUSH_TAGS:
        return "push"
    return "other"


def is_whole_response(apdu: bytes | bytearray | memoryview) -> bool:
    """True if ``apdu`` is exactly one whole response APDU: its tag says response
    (cheap) and it decodes with nothing left over (only then is it decoded)."""
    if kind_of(apdu) != "response":
        return False
    try:
        decode(apdu)
    except DlmsError:
        return False
    return True
