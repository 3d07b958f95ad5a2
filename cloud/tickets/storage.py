"""Ticket attachments on disk, outside the database: content-addressed, written atomically.

:meth:`AttachmentStore.put` streams an upload into a temporary file in the store's
directory, sniffing its first bytes (:func:`cloud.tickets.rules.files.accept`) and
counting the rest against the type's limit; only a complete, accepted file is renamed to
its SHA-256 (``ab/abcdef...``). A refused, oversized or interrupted upload leaves nothing:
the temporary file is removed on every error. Equal files share one stored copy (storing
it again touches it, so the orphan cleanup's grace period starts again).
:meth:`AttachmentStore.listing` is what the tickets job's orphan cleanup reads.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cloud.tickets.rules.files import SNIFF_BYTES, Accepted, StoredFile, accept, check_size

__all__ = ["AttachmentStore", "Stored"]

_CHUNK = 64 * 1024
_SHA256 = frozenset("0123456789abcdef")
_TEMP = ".upload-"


@dataclass(frozen=True, slots=True)
class Stored:
    sha256: str
    size: int
    accepted: Accepted
    created: bool  # False: an equal file was stored already


class AttachmentStore:
    """The directory of attachment files (``settings.attachments_dir``)."""

    def __init__(self, root: Path, *, limits: Mapping[str, int]) -> None:
        self.root = root
        self.limits = dict(limits)

    def path(self, sha256: str) -> Path:
        if len(sha256) != 64 or not set(sha256) <= _SHA256:
            raise ValueError(f"not a SHA-256: {sha256[:80]!r}")
        return self.root / sha256[:2] / sha256

    def put(self, source: BinaryIO, *, name: str) -> Stored:
        """Store ``source`` if its type is accepted and it is within its limit.

        Raises:
            UnsupportedAttachment: not an accepted type.
            AttachmentTooLarge: over the type's limit (stops reading there).
        """
        self.root.mkdir(parents=True, exist_ok=True)
        head = b""
        while len(head) < SNIFF_BYTES:
            chunk = source.read(SNIFF_BYTES - len(head))
            if not chunk:
                break
            head += chunk
        accepted = accept(head, name=name, limits=self.limits)
        temp = self.root / f"{_TEMP}{secrets.token_hex(8)}"
        digest = hashlib.sha256()
        size = 0
        try:
            with temp.open("xb") as out:
                chunk = head
                while chunk:
                    size += len(chunk)
                    check_size(size, accepted.limit)
                    digest.update(chunk)
                    out.write(chunk)
                    chunk = source.read(_CHUNK)
                out.flush()
                os.fsync(out.fileno())
            sha = digest.hexdigest()
            final = self.path(sha)
            try:
                os.utime(final)  # in use again: not an orphan for another grace period
            except FileNotFoundError:
                final.parent.mkdir(exist_ok=True)
                os.replace(temp, final)
                return Stored(sha, size, accepted, created=True)
            temp.unlink()
            return Stored(sha, size, accepted, created=False)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise

    def discard(self, sha256: str) -> None:
        """Remove a stored file (one no row refers to: its row's transaction failed)."""
        self.path(sha256).unlink(missing_ok=True)

    def listing(self) -> list[StoredFile]:
        """Every stored file and unfinished upload; anything else here is not ours."""
        found: list[StoredFile] = []
        if not self.root.is_dir():
            return found
        for entry in self.root.iterdir():
            if entry.name.startswith(_TEMP) and entry.is_file():
                found.append(StoredFile(entry.name, None, int(entry.stat().st_mtime)))
            elif len(entry.name) == 2 and set(entry.name) <= _SHA256 and entry.is_dir():
                for file in entry.iterdir():
                    name = file.name
                    if (
                        len(name) == 64
                        and set(name) <= _SHA256
                        and name[:2] == entry.name
                        and file.is_file()
                    ):
                        found.append(
                            StoredFile(f"{entry.name}/{name}", name, int(file.stat().st_mtime))
                        )
        return found

    def remove(self, file: StoredFile) -> bool:
        """Remove a listed file unless it was written again since it was listed (an
        upload of the same bytes); whether it was removed."""
        path = self.root / file.name
        try:
            if int(path.stat().st_mtime) > file.modified_at:
                return False
            path.unlink()
        except FileNotFoundError:
            return False
        return True
