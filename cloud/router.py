"""All ``/api/v1`` routers: each feature's routes, gathered under one prefix.

Every route needs an API key or a login session except the public ones: the
published keys and key set (devices are provisioned from them), the
readiness probe, and login/logout. A new router goes under ``protected``
unless it is as public as those, and each of its routes declares exactly one
``require(Permission.X)`` (tests/cloud/accounts/test_roles.py walks them all). Every
route refuses URL parameters it does not take or cannot read exactly
(:func:`cloud.http.inputs.refuse_loose_parameters`): a protected one in its
``require``, after the permission check, a public one here.
"""

from fastapi import APIRouter, Depends

from cloud import probe as health
from cloud.accounts import pages as account_pages
from cloud.accounts.deps import get_principal
from cloud.accounts.routes import accounts, auth
from cloud.billing import pages as billing_pages
from cloud.billing.routes import credit, invoices, orders
from cloud.devices import pages as device_pages
from cloud.devices.routes import devices, installations, keys
from cloud.health import pages as health_pages
from cloud.health import routes as device_health
from cloud.http.errors import documented
from cloud.http.inputs import refuse_loose_parameters
from cloud.notifications import routes as notifications
from cloud.repairs import pages as repair_pages
from cloud.repairs import routes as repairs
from cloud.subscriptions import pages as subscription_pages
from cloud.subscriptions import routes as subscriptions
from cloud.tickets import pages as ticket_pages
from cloud.tickets import routes as tickets
from cloud.web import docs

__all__ = ["api_router", "page_router"]

protected = APIRouter(
    dependencies=[Depends(get_principal)],
    responses=documented({401: "no API key, or one that is unknown or revoked"}),
)
protected.include_router(installations.router)
protected.include_router(devices.router)
protected.include_router(keys.router)
protected.include_router(accounts.router)
protected.include_router(auth.router)
protected.include_router(subscriptions.router)
protected.include_router(orders.router)
protected.include_router(invoices.router)
protected.include_router(credit.router)
protected.include_router(notifications.router)
protected.include_router(device_health.router)
protected.include_router(tickets.router)
protected.include_router(repairs.router)

public = APIRouter(dependencies=[Depends(refuse_loose_parameters)])
public.include_router(keys.public_router)
public.include_router(auth.public_router)  # login and logout
public.include_router(health.router)

api_router = APIRouter(prefix="/api/v1")
api_router.include_router(protected)
api_router.include_router(public)

# The dashboard: each feature's pages, beside its routes (cloud/<feature>/pages), and the
# API reference. Pages authenticate with the login session only (cloud.accounts.deps.PageUser).
page_router = APIRouter(include_in_schema=False)
for _pages in (
    account_pages,
    device_pages,
    subscription_pages,
    billing_pages,
    health_pages,
    ticket_pages,
    repair_pages,
    docs,
):
    page_router.include_router(_pages.router)
