"""Typed refusals of plans, plan changes and purchase preconditions: the subscriptions
branch of the tree in :mod:`cloud.errors` (409 each, as their branch; the text says
what to do)."""

from __future__ import annotations

from cloud.errors import SubscriptionConflict

__all__ = [
    "FirmwareTooOld",
    "NotConnected",
    "NothingRefundable",
    "PlanChangeRefused",
    "PreconditionFailed",
    "UserLimitReached",
]


class PreconditionFailed(SubscriptionConflict):
    """The installation does not meet what the product needs to be bought."""


class NotConnected(PreconditionFailed):
    """No device of the installation reported within the configured window."""


class FirmwareTooOld(PreconditionFailed):
    """The controller's firmware is older than the product's minimum (or unknown)."""


class UserLimitReached(SubscriptionConflict):
    """A per-user product already covers its maximum number of users in the installation."""


class PlanChangeRefused(SubscriptionConflict):
    """The subscription cannot change to that plan (state, another service, same plan)."""


class NothingRefundable(PlanChangeRefused):
    """A downgrade whose prorated difference no paid card charge can give back."""
