"""Health gap repair: which seq ranges to ask a device to send again (pure).

A device numbers its health reports 1, 2, 3, ... A hole between two stored
reports is a gap, unless the device declared it: a report's ``dropped`` says
how many reports its full outbox dropped before it, counted against the
nearest gaps below. A gap the declared drops cover whole is not asked for; a
gap they cover only in part is asked for whole, because which of its seqs
were dropped is not known: the outbox drops its oldest *unsent* report, which
is above reports acknowledged and then lost by the broker, but below reports
still queued that the broker loses after a reconnect. The device answers the
seqs it no longer holds (``not_held``), and those are never asked again. A gap is
asked for only once the report above it has been stored for ``grace_s`` (an
in-flight report is not lost), never again within ``backoff_s`` of asking,
and never when the device answered that it no longer holds those seqs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["Asked", "SeqRange", "Stored", "find_gaps"]


@dataclass(frozen=True, slots=True)
class SeqRange:
    """Seqs ``first..last``, both included."""

    first: int
    last: int

    def __len__(self) -> int:
        return self.last - self.first + 1


@dataclass(frozen=True, slots=True)
class Stored:
    """One stored report: its seq, when the cloud received it, its declared ``dropped``."""

    seq: int
    received_at: int
    dropped: int = 0


@dataclass(frozen=True, slots=True)
class Asked:
    """A range already asked for, and when."""

    first: int
    last: int
    asked_at: int


def _subtract(ranges: list[SeqRange], holes: Iterable[tuple[int, int]]) -> list[SeqRange]:
    out = ranges
    for lo, hi in holes:
        cut: list[SeqRange] = []
        for r in out:
            if hi < r.first or lo > r.last:
                cut.append(r)
                continue
            if r.first < lo:
                cut.append(SeqRange(r.first, lo - 1))
            if hi < r.last:
                cut.append(SeqRange(hi + 1, r.last))
        out = cut
    return out


def find_gaps(
    stored: Iterable[Stored],
    *,
    now: int,
    grace_s: int,
    backoff_s: int,
    asked: Sequence[Asked] = (),
    unrecoverable: Sequence[tuple[int, int]] = (),
    max_range: int = 1000,
    max_ranges: int = 10,
) -> list[SeqRange]:
    """The ranges to ask for now, lowest first, each at most ``max_range`` seqs long.

    Args:
        stored: the device's stored reports over the recent window (any order).
        now: epoch seconds.
        grace_s: a gap counts once the report above it was received this long ago.
        backoff_s: a range asked at ``asked_at`` is not asked again before ``asked_at + backoff_s``.
        asked: ranges already asked for.
        unrecoverable: ``(first, last)`` ranges the device no longer holds.
        max_range: seqs per range (a ``resend_health`` bound).
        max_ranges: ranges per call, so one device cannot flood a pass.
    """
    if max_range < 1 or max_ranges < 0:
        raise ValueError("max_range must be at least 1 and max_ranges not negative")
    by_seq: dict[int, Stored] = {}
    for report in stored:
        by_seq.setdefault(report.seq, report)
    seqs = sorted(by_seq)
    gaps: list[SeqRange] = []
    credit = 0  # declared drops not yet matched to a gap, walking down from the top
    for upper, lower in zip(reversed(seqs), reversed(seqs[:-1]), strict=False):
        credit += max(0, by_seq[upper].dropped)
        size = upper - lower - 1
        if size <= 0:
            continue
        declared = min(credit, size)
        credit -= declared
        if size > declared and by_seq[upper].received_at <= now - grace_s:
            gaps.append(SeqRange(lower + 1, upper - 1))
    gaps.reverse()
    recent = [(a.first, a.last) for a in asked if a.asked_at > now - backoff_s]
    wanted = _subtract(_subtract(gaps, unrecoverable), recent)
    out: list[SeqRange] = []
    for r in wanted:
        first = r.first
        while first <= r.last and len(out) < max_ranges:
            last = min(r.last, first + max_range - 1)
            out.append(SeqRange(first, last))
            first = last + 1
    return out
