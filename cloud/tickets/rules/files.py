"""Which attachment a ticket accepts (pure): the type is sniffed from the bytes, not named.

:func:`sniff` reads the first bytes (:data:`SNIFF_BYTES`) and names the type: PNG, JPEG,
WebP, PDF, MP4, WebM, or a plain-text log (UTF-8 without NUL or other control bytes but
tab, CR, LF, ESC). The client's declared type and file name never decide it.
:func:`accept` checks the type against the family limits (``limits``: family -> bytes,
the cloud settings' ``tickets_attachment_limits``); the upload adapter calls
:func:`check_size` while it streams, so an oversized upload stops at the limit.
:func:`orphans` picks the stored files to clean up: unfinished uploads and files no
attachment row refers to (a crash between storing and the row), once older than a grace
period, so an upload still in flight is never taken.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from cloud.errors import N_, ContentTooLarge, Forbidden, InvalidRequest, InvalidTransition

__all__ = [
    "FAMILIES",
    "MAX_FILES",
    "MAX_NAME",
    "SNIFF_BYTES",
    "AttachmentTooLarge",
    "NotYourAttachment",
    "TooManyAttachments",
    "UnsupportedAttachment",
    "Accepted",
    "StoredFile",
    "accept",
    "check_count",
    "check_delete",
    "check_size",
    "orphans",
    "safe_name",
    "sniff",
]

SNIFF_BYTES = 4096
MAX_NAME = 120
MAX_FILES = 5
"""Files one message (or one upload) carries at most."""

FAMILIES: Mapping[str, str] = {
    "image/png": "image",
    "image/jpeg": "image",
    "image/webp": "image",
    "text/plain": "text",
    "video/mp4": "video",
    "video/webm": "video",
    "application/pdf": "pdf",
}
_EXTENSIONS: Mapping[str, str] = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "text/plain": ".txt",
    "video/mp4": ".mp4",
    "video/webm": ".webm",
    "application/pdf": ".pdf",
}
_TEXT_CONTROLS = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1a\x1c-\x1f\x7f]")


class UnsupportedAttachment(InvalidRequest):
    """The bytes are none of the accepted types (422)."""


class AttachmentTooLarge(ContentTooLarge):
    """Over its type's size limit (413)."""


class TooManyAttachments(InvalidRequest):
    """More files than one message carries (422)."""


class NotYourAttachment(Forbidden):
    """A customer deleting a file someone else uploaded (403)."""


def check_count(count: int) -> None:
    """Raises TooManyAttachments over :data:`MAX_FILES`."""
    if count > MAX_FILES:
        raise TooManyAttachments(
            N_("a message carries at most %(count)s files: send the others with another"),
            count=MAX_FILES,
        )


def check_delete(*, staff: bool, own: bool, closed: bool) -> None:
    """Support deletes any attachment; whoever uploaded one deletes it while the ticket is
    not closed.

    Raises:
        NotYourAttachment: a customer's attempt at someone else's file.
        InvalidTransition: the uploader's, on a closed ticket.
    """
    if staff:
        return
    if not own:
        raise NotYourAttachment(N_("only who uploaded a file, or support, may delete it"))
    if closed:
        raise InvalidTransition(
            N_("the ticket is closed and keeps its files: ask support to delete one")
        )


@dataclass(frozen=True, slots=True)
class Accepted:
    content_type: str
    family: str
    limit: int
    filename: str


def sniff(head: bytes) -> str | None:
    """The content type the first bytes show, or None for anything not accepted."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if head[4:8] == b"ftyp":
        return "video/mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm"
    if head and not _TEXT_CONTROLS.search(head):
        try:
            head.decode("utf-8")
        except UnicodeDecodeError as err:
            if err.start < len(head) - 3:  # not just a character cut at the sniff's end
                return None
        return "text/plain"
    return None


def safe_name(name: str, content_type: str) -> str:
    """A download name: the client's base name in safe characters, with the type's
    extension (never one the bytes do not have)."""
    base = re.split(r"[\\/]", name)[-1]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", base.rsplit(".", 1)[0]).strip("._") or "attachment"
    return stem[: MAX_NAME - 6] + _EXTENSIONS[content_type]


def check_size(size: int, limit: int) -> None:
    """Raises AttachmentTooLarge when ``size`` is over ``limit``."""
    if size > limit:
        raise AttachmentTooLarge(
            N_(
                "the attachment is over %(limit)s bytes, the limit for its type: send a smaller one"
            ),
            limit=limit,
        )


def accept(head: bytes, *, name: str, limits: Mapping[str, int]) -> Accepted:
    """The sniffed type of an upload and its limit, if the ticket accepts it.

    Raises:
        UnsupportedAttachment: empty, or not an accepted type (or its family has no limit).
    """
    content_type = sniff(head)
    family = FAMILIES.get(content_type or "")
    if content_type is None or family is None or limits.get(family, 0) <= 0:
        raise UnsupportedAttachment(
            N_(
                "attach a photo or screenshot (PNG, JPEG, WebP), a text log, "
                "a video (MP4, WebM) or a PDF"
            )
        )
    return Accepted(content_type, family, limits[family], safe_name(name, content_type))


@dataclass(frozen=True, slots=True)
class StoredFile:
    """A file in the attachments directory: ``name`` relative to it, the SHA-256 it is
    stored as (None: an upload's temporary file), when it was last written."""

    name: str
    sha256: str | None
    modified_at: int


def orphans(
    files: Iterable[StoredFile], referenced: Collection[str], *, now: int, grace_s: int
) -> list[StoredFile]:
    """The files to remove: last written more than ``grace_s`` before ``now``, and either
    an upload that never finished or a stored file whose SHA-256 no attachment row names
    (``referenced``)."""
    return [
        f
        for f in files
        if f.modified_at < now - grace_s and (f.sha256 is None or f.sha256 not in referenced)
    ]
