"""Subscriptions: the service (purchase, renew, deactivate, reactivate) and the renewal job.

The rules are :mod:`cloud.domain.lifecycle` (pure) and the catalogue
:mod:`cloud.domain.catalogue`; the rows :mod:`cloud.store.subscriptions`.
"""

from cloud.subscriptions.job import RenewalJob, RenewalReport
from cloud.subscriptions.service import SubscriptionService
from cloud.subscriptions.views import PurchaseResult, subscription_view

__all__ = [
    "PurchaseResult",
    "RenewalJob",
    "RenewalReport",
    "SubscriptionService",
    "subscription_view",
]
