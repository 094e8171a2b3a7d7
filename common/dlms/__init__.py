"""Sans-I/O DLMS/COSEM codec: APDUs (xDLMS and ACSE), A-XDR data, IEC 62056-47 wrapper.

Bytes in, values out, no sockets or threads: ``decode(apdu_bytes) -> Apdu`` raises a
``DlmsError`` subclass for anything malformed, ``encode(apdu) -> bytes`` is its exact
inverse (``encode(decode(b)) == b``), ``describe(apdu)`` gives one readable line. The
TCP wrapper lives in ``common.dlms.wrapper``; ``kind_of``/``is_whole_response``
(``common.dlms.kinds``) say whether a payload answers a request or is a push.
"""

from common.dlms.apdu import (
    LAYOUTS,
    Apdu,
    Blob,
    Descriptor,
    Selection,
    Seq,
    decode,
    decode_first,
    describe,
    encode,
)
from common.dlms.axdr import (
    TYPE_NAMES,
    TYPE_TAGS,
    BitString,
    CompactArray,
    Data,
    TypeDesc,
    decode_data,
    encode_data,
    format_datetime,
)
from common.dlms.ber import Tlv
from common.dlms.count import apdu_name, count_apdu
from common.dlms.errors import (
    BadLength,
    BadTag,
    BadValue,
    DlmsError,
    EncodeError,
    TooDeep,
    TrailingBytes,
    Truncated,
    WrapperError,
)
from common.dlms.kinds import is_whole_response, kind_of

__all__ = [
    "LAYOUTS",
    "TYPE_NAMES",
    "TYPE_TAGS",
    "Apdu",
    "BadLength",
    "BadTag",
    "BadValue",
    "BitString",
    "Blob",
    "CompactArray",
    "Data",
    "Descriptor",
    "DlmsError",
    "EncodeError",
    "Selection",
    "Seq",
    "Tlv",
    "TooDeep",
    "TrailingBytes",
    "Truncated",
    "TypeDesc",
    "WrapperError",
    "apdu_name",
    "count_apdu",
    "decode",
    "decode_data",
    "decode_first",
    "describe",
    "encode",
    "encode_data",
    "format_datetime",
    "is_whole_response",
    "kind_of",
]
