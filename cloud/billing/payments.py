"""The payment provider boundary and its sandbox (a test double: no network, no money).

:class:`PaymentProvider` is the one interface to a card processor. The only
implementation today is :class:`SandboxPaymentProvider`, a simulator named
as one, selected with ``payment_provider = "sandbox"``; a real processor
gets its own adapter behind the same Protocol.

Sandbox test cards (the card number is the ``card_token``):

==================  =====================================================
4242424242424242    charge succeeds
4000000000000002    charge declined
4000000000000119    charge goes through but the answer is lost: the caller
                    sees ``timed_out``; :meth:`lookup` later tells the truth
4000000000005126    charge succeeds; every refund of it fails while the
                    number is in ``failing_refund_cards`` (the retry queue)
4000000000000077    charge succeeds and settles at once (a refund, not a
                    void, gives it back without waiting for the clock)
anything else       declined (``unknown test card``)
==================  =====================================================
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from cloud.billing.errors import (
    ChargeNotSettled,
    ChargeSettled,
    RefundFailed,
    RefundTooLarge,
    UnknownCharge,
)
from cloud.errors import N_
from common.clock import Clock

__all__ = [
    "CARD_DECLINED",
    "CARD_OK",
    "CARD_REFUND_FAILS",
    "CARD_SETTLED",
    "CARD_TIMEOUT",
    "Charge",
    "ChargeStatus",
    "LedgerEntry",
    "PaymentProvider",
    "SandboxPaymentProvider",
]

_log = logging.getLogger(__name__)

ChargeStatus = Literal["succeeded", "declined", "timed_out"]

CARD_OK = "4242424242424242"
CARD_DECLINED = "4000000000000002"
CARD_TIMEOUT = "4000000000000119"
CARD_REFUND_FAILS = "4000000000005126"
CARD_SETTLED = "4000000000000077"  # Stripe's "available balance at once" test card


@dataclass(frozen=True, slots=True)
class Charge:
    """The provider's answer to a charge."""

    charge_id: str
    status: ChargeStatus
    settled: bool
    decline_reason: str | None = None
    card_last4: str | None = None  # the card's last four digits, for the receipt


@runtime_checkable
class PaymentProvider(Protocol):
    """A card processor. Every call is idempotent on its key or id."""

    async def charge(
        self, *, amount_cents: int, currency: str, card_token: str, idempotency_key: str
    ) -> Charge:
        """Charge a card once per ``idempotency_key``: a retry returns the first outcome.

        A lost answer is ``status="timed_out"``, not an exception.
        """
        ...

    async def lookup(self, idempotency_key: str) -> Charge | None:
        """What became of the charge made with this key (None: the provider never got it)."""
        ...

    async def void(self, charge_id: str) -> None:
        """Cancel a whole unsettled charge (voiding a voided charge is not an error).

        Raises:
            ChargeSettled: too late, refund instead.
            UnknownCharge, VoidFailed: the provider could not void.
        """
        ...

    async def refund(self, charge_id: str, *, amount_cents: int) -> None:
        """Return ``amount_cents`` of a settled charge.

        Raises:
            ChargeNotSettled: void instead.
            RefundFailed: the provider failed; try again later.
        """
        ...

    async def settle_all(self) -> None:
        """Settle every open charge now (sandbox only; real processors settle on their own)."""
        ...


@dataclass
class LedgerEntry:
    """One charge as the sandbox processor sees it."""

    charge_id: str
    idempotency_key: str
    amount_cents: int
    currency: str
    card_last4: str
    status: ChargeStatus
    created_at: int
    settled: bool = False
    voided: bool = False
    refunded_cents: int = 0
    refund_attempts: int = 0
    decline_reason: str | None = None


@dataclass
class SandboxPaymentProvider:
    """A :class:`PaymentProvider` test double with test card numbers and a readable ledger.

    Charges start unsettled; :meth:`settle_all` settles them, and so does
    time when ``settle_after_s`` is set (read from ``clock`` on every call).
    ``ledger`` holds every charge by id, ``charges_made`` counts calls that
    created a charge (a retried key creates none).
    """

    clock: Clock | None = None
    settle_after_s: int | None = None
    ledger: dict[str, LedgerEntry] = field(default_factory=dict)
    failing_refund_cards: set[str] = field(default_factory=lambda: {CARD_REFUND_FAILS})
    charges_made: int = 0
    _by_key: dict[str, str] = field(default_factory=dict)
    _cards: dict[str, str] = field(default_factory=dict)

    def _now(self) -> int:
        return self.clock() if self.clock is not None else 0

    def _settle_due(self) -> None:
        if self.settle_after_s is None or self.clock is None:
            return
        now = self.clock()
        for entry in self.ledger.values():
            if entry.status == "succeeded" and not entry.voided:
                if now - entry.created_at >= self.settle_after_s:
                    entry.settled = True

    def _entry(self, charge_id: str) -> LedgerEntry:
        self._settle_due()
        try:
            return self.ledger[charge_id]
        except KeyError:
            raise UnknownCharge(f"the sandbox has no charge {charge_id!r}") from None

    @staticmethod
    def _answer(entry: LedgerEntry) -> Charge:
        return Charge(
            charge_id=entry.charge_id,
            status=entry.status,
            settled=entry.settled,
            decline_reason=entry.decline_reason,
            card_last4=entry.card_last4,
        )

    async def charge(
        self, *, amount_cents: int, currency: str, card_token: str, idempotency_key: str
    ) -> Charge:
        if amount_cents <= 0:
            raise ValueError("the sandbox charges positive amounts only")
        self._settle_due()
        known = self._by_key.get(idempotency_key)
        if known is not None:
            return self._answer(self.ledger[known])
        self.charges_made += 1
        charge_id = f"ch_sandbox_{len(self.ledger) + 1:06d}"
        declined = card_token not in (CARD_OK, CARD_TIMEOUT, CARD_REFUND_FAILS, CARD_SETTLED)
        reason = None
        if declined:
            reason = "card declined" if card_token == CARD_DECLINED else "unknown test card"
        entry = LedgerEntry(
            charge_id=charge_id,
            idempotency_key=idempotency_key,
            amount_cents=amount_cents,
            currency=currency,
            card_last4=card_token[-4:],
            status="declined" if declined else "succeeded",
            created_at=self._now(),
            decline_reason=reason,
            settled=card_token == CARD_SETTLED,
        )
        self.ledger[charge_id] = entry
        self._by_key[idempotency_key] = charge_id
        self._cards[charge_id] = card_token
        _log.info("sandbox charge %s: %s", charge_id, entry.status)
        if card_token == CARD_TIMEOUT:
            return Charge(charge_id="", status="timed_out", settled=False)
        return self._answer(entry)

    async def lookup(self, idempotency_key: str) -> Charge | None:
        self._settle_due()
        known = self._by_key.get(idempotency_key)
        return None if known is None else self._answer(self.ledger[known])

    async def void(self, charge_id: str) -> None:
        entry = self._entry(charge_id)
        if entry.voided:
            return
        if entry.settled:
            raise ChargeSettled(
                N_("charge %(charge)s has settled: refund it instead"), charge=charge_id
            )
        entry.voided = True

    async def refund(self, charge_id: str, *, amount_cents: int) -> None:
        entry = self._entry(charge_id)
        if not entry.settled:
            raise ChargeNotSettled(
                N_("charge %(charge)s has not settled: void it instead"), charge=charge_id
            )
        if amount_cents <= 0 or amount_cents > entry.amount_cents - entry.refunded_cents:
            raise RefundTooLarge(
                N_("cannot refund %(amount)s cents of charge %(charge)s"),
                amount=amount_cents,
                charge=charge_id,
            )
        entry.refund_attempts += 1
        if self._cards[charge_id] in self.failing_refund_cards:
            raise RefundFailed(f"the sandbox failed to refund charge {charge_id} (test card)")
        entry.refunded_cents += amount_cents

    async def settle_all(self) -> None:
        for entry in self.ledger.values():
            if entry.status == "succeeded" and not entry.voided:
                entry.settled = True
