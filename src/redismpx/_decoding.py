"""Names as ``str`` (``decode_names=True``, B56): the decoding, and the wrappers that apply it
to a subscription's callbacks, so that the reader and the worker call them as any other."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from types import FunctionType, MethodType
from typing import Any

from .typedefs import OnActivation, OnMessage

# A message or activation callback taking names as bytes or (``decode_names``) as str.
AnyOnMessage = Callable[[Any, bytes], Any]
AnyOnActivation = Callable[[Any], Any]


def decode_name(name: bytes) -> str:
    """A name as ``str``: UTF-8, stray bytes as surrogate escapes (PEP 383, as
    ``os.fsdecode``), so ``name.encode("utf-8", "surrogateescape")`` gives the bytes back."""
    return name.decode("utf-8", "surrogateescape")


# One decoding wrapper per callback, shared by every subscription made with it: thousands of
# subscriptions usually share one callback, and a closure each would more than double what a
# subscription costs. Weak values: an entry lives as long as a subscription holds its wrapper.
# Only functions and bound methods (equal when they are the same callable): a callable object
# may define ``==`` as it likes.
_message_wrappers: weakref.WeakValueDictionary[Any, OnMessage] = weakref.WeakValueDictionary()
_name_wrappers: weakref.WeakValueDictionary[Any, OnActivation] = weakref.WeakValueDictionary()


def decoding_message(fn: AnyOnMessage) -> OnMessage:
    shared = isinstance(fn, FunctionType | MethodType)
    wrapper = _message_wrappers.get(fn) if shared else None
    if wrapper is None:

        def wrapper(channel: bytes, data: bytes) -> Any:
            return fn(channel.decode("utf-8", "surrogateescape"), data)

        if shared:
            _message_wrappers[fn] = wrapper
    return wrapper


def decoding_name(fn: AnyOnActivation) -> OnActivation:
    shared = isinstance(fn, FunctionType | MethodType)
    wrapper = _name_wrappers.get(fn) if shared else None
    if wrapper is None:

        def wrapper(name: bytes) -> Any:
            return fn(name.decode("utf-8", "surrogateescape"))

        if shared:
            _name_wrappers[fn] = wrapper
    return wrapper
