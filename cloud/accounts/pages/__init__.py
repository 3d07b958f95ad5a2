"""The accounts feature's dashboard pages: signing in and out, one's password and profile,
customers (staff look-up) and administration. ``router`` gathers them."""

from fastapi import APIRouter

from cloud.accounts.pages import admin, customers, password, profile, session

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
for _module in (session, password, profile, customers, admin):
    router.include_router(_module.router)
