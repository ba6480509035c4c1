"""Errors of the memory directory beyond the ``plugins.directory`` family.

``WatermarkExpiredError`` is the one a sync engine must handle: the change log no longer reaches back
to the caller's watermark (or the watermark belongs to another instance), so only a full sync can
catch up. ``DirectoryClosedError`` is "closed by us": an operation before ``open`` or after ``close``.
"""

from __future__ import annotations

from plugins.directory import DirectoryError


class WatermarkExpiredError(DirectoryError):
    """The changes since this watermark are no longer known: do a full sync, then use its watermark."""


class ForeignWatermarkError(WatermarkExpiredError):
    """The watermark was not issued by this directory instance (or is malformed): do a full sync."""


class DirectoryClosedError(DirectoryError):
    """The directory is not open (never opened, or closed by its owner); not worth retrying."""
