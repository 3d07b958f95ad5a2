"""Who pays for a subscription request, and how (card or invoice)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from cloud.accounts.apikeys import Principal
from cloud.accounts.rules import Role
from cloud.accounts.users import company_payment_type, user
from cloud.errors import N_, InvalidRequest

__all__ = ["payment_method", "purchaser"]


def purchaser(principal: Principal, explicit: int | None, *, default: int | None = None) -> int:
    """The user who pays: the principal's user; an admin key may name one."""
    if (
        explicit is not None
        and principal.user_id is None
        and principal.role
        in (
            Role.ADMIN,
            Role.CS_ADMIN,
        )
    ):
        return explicit
    if principal.user_id is not None:
        return principal.user_id
    if default is not None:
        return default
    raise InvalidRequest(
        N_("a purchase needs a purchaser: use a user's key, or give purchaser_id with an admin key")
    )


def payment_method(session: Session, buyer: int, asked: str | None) -> str:
    """How ``buyer`` pays: invoice only for a company paying by invoice.

    Raises:
        UnknownUser, InvalidRequest.
    """
    company_id = user(session, buyer).company_id
    allowed = "card" if company_id is None else company_payment_type(session, company_id)
    how = asked or allowed
    if how not in ("card", "invoice"):
        raise InvalidRequest(N_("pay_with must be 'card' or 'invoice', not %(how)s"), how=repr(how))
    if how == "invoice" and allowed != "invoice":
        raise InvalidRequest(N_("only partners with an invoice account may pay by invoice"))
    return how
