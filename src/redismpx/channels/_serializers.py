"""Message (de)serialization, byte for byte as channels_redis does it.

``msgpack`` (the default) or ``json``, optionally encrypted with Fernet under
``symmetric_encryption_keys`` (each key is hashed with SHA-256 into a Fernet key; the first
encrypts, all decrypt): a message serialized by either layer reads the same in the other, so
a fleet can move from channels_redis to this layer one process at a time. Any other format
name is looked up in channels_redis's serializer registry, when channels_redis is installed.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any

import msgpack  # type: ignore[import-untyped, unused-ignore]

from ..errors import InvalidArgument, InvalidArgumentType

_FORMATS: dict[str, tuple[Callable[[Any], bytes], Callable[[bytes], Any]]] = {
    "msgpack": (msgpack.packb, msgpack.unpackb),
    "json": (lambda message: json.dumps(message).encode("utf-8"), json.loads),
}


class Serializer:
    """``serialize(message) -> bytes`` and ``deserialize(bytes) -> message``."""

    def __init__(self, format: str, symmetric_encryption_keys: Sequence[str | bytes] | None):
        if not isinstance(format, str):
            raise InvalidArgumentType("serializer_format must be a str")
        self._custom: Any = None
        self._crypter: Any = None
        if format in _FORMATS:
            self._dumps, self._loads = _FORMATS[format]
            if symmetric_encryption_keys:
                self._crypter = _crypter(symmetric_encryption_keys)
        else:
            self._custom = _registered(format, symmetric_encryption_keys)

    def serialize(self, message: Any) -> bytes:
        if self._custom is not None:
            return bytes(self._custom.serialize(message))
        data = self._dumps(message)
        if self._crypter is not None:
            data = self._crypter.encrypt(data)
        return data

    def deserialize(self, data: bytes) -> Any:
        if self._custom is not None:
            return self._custom.deserialize(data)
        if self._crypter is not None:
            data = self._crypter.decrypt(data, None)
        return self._loads(data)


def _crypter(keys: Sequence[str | bytes]) -> Any:
    if isinstance(keys, str | bytes):
        raise InvalidArgumentType("symmetric_encryption_keys must be a list of keys")
    try:
        from cryptography.fernet import Fernet, MultiFernet
    except ImportError as exc:
        raise InvalidArgument(
            "symmetric_encryption_keys need the cryptography package: pip install cryptography"
        ) from exc
    fernets = []
    for key in keys:
        if isinstance(key, str):
            key = key.encode("utf-8")
        if not isinstance(key, bytes):
            raise InvalidArgumentType("each symmetric encryption key must be a str or bytes")
        fernets.append(Fernet(base64.urlsafe_b64encode(hashlib.sha256(key).digest())))
    return MultiFernet(fernets)


def _registered(format: str, keys: Sequence[str | bytes] | None) -> Any:
    try:
        from channels_redis.serializers import (  # type: ignore[import-untyped, import-not-found, unused-ignore]
            SerializerDoesNotExist,
            registry,
        )
    except ImportError:
        raise InvalidArgument(
            f"unknown serializer_format {format!r}: 'msgpack' or 'json' (other formats are "
            "looked up in channels_redis's serializer registry, and channels_redis is not "
            "installed)"
        ) from None
    try:
        return registry.get_serializer(format, symmetric_encryption_keys=keys)
    except SerializerDoesNotExist:
        raise InvalidArgument(
            f"unknown serializer_format {format!r}: 'msgpack', 'json', or a format registered "
            "with channels_redis.serializers.registry"
        ) from None
