"""Encryption of Temporal payloads (LIFECYCLE_PAYLOAD_KEY), so that the Temporal server, its
database, the Web UI and anyone who can read a namespace see ciphertext where our
workflows carry customers' emails and names.

Every payload (workflow and activity inputs and results, signals, updates, queries, memos)
is sealed with AES-256-GCM under the current key, and failure messages and stack traces
are moved into an encoded payload too, as they can quote customer data. Each sealed
payload names the key it was sealed with, so a key can be rotated: the new key seals, the
old ones (LIFECYCLE_PAYLOAD_OLD_KEYS) still open what they sealed until those histories
are gone. Payloads written before encryption was turned on pass through unopened, so
running workflows and recorded histories keep replaying.

Search attributes are not payloads: Temporal indexes them in clear text, whatever the codec.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
)

from stripe_lifecycle.payload_converter import LifecyclePayloadConverter

ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"
KEY_BYTES = 32
NONCE_BYTES = 12


class PayloadKeyError(ValueError):
    """A key that is not 32 bytes in base64 or hex; the message never echoes the key."""


class UnknownPayloadKey(ValueError):
    """A payload sealed with a key this process was not given."""


def parse_key(text: str, name: str) -> bytes:
    """A 32-byte key written as 64 hex digits or as base64 (standard or URL-safe)."""
    text = text.strip()
    if len(text) == 2 * KEY_BYTES:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    try:
        key = base64.b64decode(text.replace("-", "+").replace("_", "/"), validate=True)
    except binascii.Error:
        key = b""
    if len(key) != KEY_BYTES:
        raise PayloadKeyError(
            f"{name} must be 32 random bytes as 64 hex digits or base64 "
            '(python -c "import secrets; print(secrets.token_hex(32))")'
        )
    return key


def key_id(key: bytes) -> str:
    """A short public name of a key: which key sealed a payload, without revealing it. A
    hash of a random 256-bit key gives nothing away about the key."""
    return hashlib.sha256(b"stripe-lifecycle payload key\0" + key).hexdigest()[:16]


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM over each serialized payload: a fresh 96-bit nonce per payload, and the
    key id bound in as associated data (a payload relabelled with another key's id does not
    open). Decoding passes through payloads that are not ours (written unencrypted)."""

    def __init__(self, key: bytes, old_keys: Sequence[bytes] = ()) -> None:
        self._key_id = key_id(key)
        self._sealer = AESGCM(key)
        self._openers = {key_id(k): AESGCM(k) for k in (*old_keys, key)}

    @property
    def current_key_id(self) -> str:
        return self._key_id

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self._seal(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self._open(p) for p in payloads]

    def _seal(self, payload: Payload) -> Payload:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._sealer.encrypt(nonce, payload.SerializeToString(), self._key_id.encode())
        return Payload(
            metadata={"encoding": ENCODING, KEY_ID_METADATA: self._key_id.encode()},
            data=nonce + sealed,
        )

    def _open(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload
        sealed_with = payload.metadata.get(KEY_ID_METADATA, b"").decode(errors="replace")
        opener = self._openers.get(sealed_with)
        if opener is None:
            raise UnknownPayloadKey(
                f"a payload was encrypted with key {sealed_with!r}, which is neither "
                f"LIFECYCLE_PAYLOAD_KEY ({self._key_id}) nor one of LIFECYCLE_PAYLOAD_OLD_KEYS"
            )
        nonce, sealed = payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:]
        try:
            plain = opener.decrypt(nonce, sealed, sealed_with.encode())
        except InvalidTag as exc:
            raise UnknownPayloadKey(
                f"a payload encrypted with key {sealed_with!r} does not open: altered or corrupt"
            ) from exc
        return Payload.FromString(plain)


def written_now(codec: PayloadCodec | None, payload: Payload) -> bool:
    """Whether `payload` stands as `codec` writes one today: sealed under its current key,
    or in clear where no payload key is set."""
    if isinstance(codec, EncryptionCodec):
        return (
            payload.metadata.get("encoding") == ENCODING
            and payload.metadata.get(KEY_ID_METADATA) == codec.current_key_id.encode()
        )
    return payload.metadata.get("encoding") != ENCODING


def build_codec(key: str | None, old_keys: str | None) -> EncryptionCodec | None:
    """The codec for LIFECYCLE_PAYLOAD_KEY and LIFECYCLE_PAYLOAD_OLD_KEYS (comma-separated);
    None while no key is set."""
    if key is None:
        if old_keys:
            raise PayloadKeyError(
                "LIFECYCLE_PAYLOAD_OLD_KEYS is set without LIFECYCLE_PAYLOAD_KEY: set the key "
                "new payloads are encrypted with"
            )
        return None
    olds = [
        parse_key(k, f"LIFECYCLE_PAYLOAD_OLD_KEYS entry {i + 1}")
        for i, k in enumerate(k for k in (old_keys or "").split(",") if k.strip())
    ]
    return EncryptionCodec(parse_key(key, "LIFECYCLE_PAYLOAD_KEY"), olds)


def data_converter(codec: PayloadCodec | None) -> DataConverter:
    """Our converter (`payload_converter.LifecyclePayloadConverter`: the default JSON, read
    faster), with the codec and failure messages encoded when there is a codec."""
    converter = dataclasses.replace(
        DataConverter.default, payload_converter_class=LifecyclePayloadConverter
    )
    if codec is None:
        return converter
    return dataclasses.replace(
        converter,
        payload_codec=codec,
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )
