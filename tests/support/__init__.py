"""Test helpers shared by the suites (imported as ``support``: ``tests/`` is on ``sys.path``)."""

from support.faultproxy import FaultProxy

__all__ = ["FaultProxy"]
