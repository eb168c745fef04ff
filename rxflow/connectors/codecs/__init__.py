"""Codecs (being split into a package; see _decode)."""

from rxflow.connectors.codecs._decode import *  # noqa: F403
from rxflow.connectors.codecs._decode import (  # noqa: F401
    CODECS,
    DECODE_POLICIES,
    ENCODERS,
    SKIPPED,
    Codec,
    CodecName,
    DecodeFailure,
    DecodePolicy,
    Decoder,
    Encoder,
    EncoderName,
    RecordRejected,
    as_bytes,
    as_json,
    as_text,
    encode_auto,
    encode_bytes,
    encode_json,
    encode_text,
    resolve_codec,
    resolve_encoder,
)
