"""Sans-I/O DLMS/COSEM codec: APDUs (xDLMS and ACSE), A-XDR data, IEC 62056-47 wrapper.

Bytes in, values out, no sockets or threads: ``decode(apdu_bytes) -> Apdu`` raises a
``DlmsError`` subclass for anything malformed, ``encode(apdu) -> bytes`` is its exact
inverse (``encode(decode(b)) == b``), ``describe(apdu)`` gives one readable line. The
TCP wrapper lives in ``common.dlms.wrapper``; ``kind_of``/``is_whole_response``
(``common.dlms.kinds``) say whether a payload answers a request or is a push.
"""

# Exports are imported when first used (PEP 562): a process that needs only
# ``common.dlms.count`` (the workers, the client) does not load the codec.
from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from common.dlms.apdu import LAYOUTS as LAYOUTS
    from common.dlms.apdu import Apdu as Apdu
    from common.dlms.apdu import Blob as Blob
    from common.dlms.apdu import Descriptor as Descriptor
    from common.dlms.apdu import Selection as Selection
    from common.dlms.apdu import Seq as Seq
    from common.dlms.apdu import decode as decode
    from common.dlms.apdu import decode_first as decode_first
    from common.dlms.apdu import describe as describe
    from common.dlms.apdu import encode as encode
    from common.dlms.axdr import TYPE_NAMES as TYPE_NAMES
    from common.dlms.axdr import TYPE_TAGS as TYPE_TAGS
    from common.dlms.axdr import BitString as BitString
    from common.dlms.axdr import CompactArray as CompactArray
    from common.dlms.axdr import Data as Data
    from common.dlms.axdr import TypeDesc as TypeDesc
    from common.dlms.axdr import decode_data as decode_data
    from common.dlms.axdr import encode_data as encode_data
    from common.dlms.axdr import format_datetime as format_datetime
    from common.dlms.ber import Tlv as Tlv
    from common.dlms.count import apdu_name as apdu_name
    from common.dlms.count import count_apdu as count_apdu
    from common.dlms.errors import BadLength as BadLength
    from common.dlms.errors import BadTag as BadTag
    from common.dlms.errors import BadValue as BadValue
    from common.dlms.errors import DlmsError as DlmsError
    from common.dlms.errors import EncodeError as EncodeError
    from common.dlms.errors import TooDeep as TooDeep
    from common.dlms.errors import TrailingBytes as TrailingBytes
    from common.dlms.errors import Truncated as Truncated
    from common.dlms.errors import WrapperError as WrapperError
    from common.dlms.kinds import is_whole_response as is_whole_response
    from common.dlms.kinds import kind_of as kind_of

_EXPORTS: dict[str, str] = {
    "LAYOUTS": "common.dlms.apdu",
    "Apdu": "common.dlms.apdu",
    "Blob": "common.dlms.apdu",
    "Descriptor": "common.dlms.apdu",
    "Selection": "common.dlms.apdu",
    "Seq": "common.dlms.apdu",
    "decode": "common.dlms.apdu",
    "decode_first": "common.dlms.apdu",
    "describe": "common.dlms.apdu",
    "encode": "common.dlms.apdu",
    "TYPE_NAMES": "common.dlms.axdr",
    "TYPE_TAGS": "common.dlms.axdr",
    "BitString": "common.dlms.axdr",
    "CompactArray": "common.dlms.axdr",
    "Data": "common.dlms.axdr",
    "TypeDesc": "common.dlms.axdr",
    "decode_data": "common.dlms.axdr",
    "encode_data": "common.dlms.axdr",
    "format_datetime": "common.dlms.axdr",
    "Tlv": "common.dlms.ber",
    "apdu_name": "common.dlms.count",
    "count_apdu": "common.dlms.count",
    "BadLength": "common.dlms.errors",
    "BadTag": "common.dlms.errors",
    "BadValue": "common.dlms.errors",
    "DlmsError": "common.dlms.errors",
    "EncodeError": "common.dlms.errors",
    "TooDeep": "common.dlms.errors",
    "TrailingBytes": "common.dlms.errors",
    "Truncated": "common.dlms.errors",
    "WrapperError": "common.dlms.errors",
    "is_whole_response": "common.dlms.kinds",
    "kind_of": "common.dlms.kinds",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'common.dlms' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
