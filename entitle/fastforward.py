"""`entitle demo --fast-forward DAYS`: a subscription's year on the test clock, in seconds.

The demo's real stack (broker, cloud, agents) runs on one
:class:`~cloud.testclock.TestClock`, read by the cloud, its jobs and every
agent. An owner buys Remote Services for the demo installation through the
API with a sandbox test card; then ``POST /api/v1/test-clock/advance`` moves
the clock one day at a time (running every job on each day) and the demo
prints what happened that day — renewal notice, renewal charge, renewal or
expiry — and what the devices decide once they have followed. With
``card="declined"`` the card on file is replaced by a declining test card
right after the purchase, so the renewal charge fails, is retried, and the
service ends on the devices at its paid-through end.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime
from typing import Any

import httpx
from rich.console import Console

from agent.runtime import Agent
from entitle.demo import DemoStack, running_stack

__all__ = ["run_fast_forward"]

PRODUCT = "TSF16100"  # Remote Services, yearly
FEATURE = "remote_access"
CARDS = {"ok": "4242424242424242", "declined": "4000000000000002"}  # sandbox test cards
DAY = 86_400
_FOLLOW_S = 10.0
_VERSION = re.compile(r" ver \d+")


def _day(epoch: int) -> str:
    return f"{datetime.fromtimestamp(epoch, tz=UTC):%Y-%m-%d}"


async def _ok(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        raise RuntimeError(
            f"{response.request.method} {response.request.url.path}: "
            f"{response.status_code} {response.text}"
        )
    return response.json()


def _decision(agent: Agent) -> str:
    allowed, why = agent.check(FEATURE)
    claims = agent.state.claims
    if allowed and claims is not None:
        return f"[green]ON[/green] until {_day(claims.ent[FEATURE].until)}"
    # the token version changes with every refresh: leave it out of the reason
    reason = _VERSION.sub("", why.split(" (")[0])
    return f"[red]OFF[/red] ({reason})"


def _devices(agents: list[Agent]) -> str:
    """``all 3 devices ON until 2027-12-01``, or each device's decision when they differ."""
    decisions = [_decision(a) for a in agents]
    if len(set(decisions)) == 1:
        return f"all {len(agents)} devices {decisions[0]}"
    return "; ".join(f"{a.device_id} {d}" for a, d in zip(agents, decisions, strict=True))


async def _follow(demo: DemoStack, sub: dict[str, Any], console: Console) -> None:
    """Wait until every device enforces what the subscription says (or say they lag)."""
    if sub["status"] == "expired":

        def done(a: Agent) -> bool:
            return not a.check(FEATURE)[0]
    else:

        def done(a: Agent) -> bool:
            claims = a.state.claims
            return (
                a.check(FEATURE)[0]
                and claims is not None
                and claims.ent[FEATURE].until == sub["end"]
            )

    try:
        await demo.wait_until(done, within=_FOLLOW_S)
    except TimeoutError:
        console.print(f"[yellow]devices have not followed within {_FOLLOW_S:.0f} s[/yellow]")


async def _buy(demo: DemoStack, *, card: str, console: Console) -> dict[str, Any]:
    api = demo.api
    owner = await _ok(
        await api.post(
            "/api/v1/users",
            json={
                "email": f"owner-{secrets.token_hex(3)}@demo.example",
                "name": "Demo owner",
                "password": secrets.token_urlsafe(18),
                "role": "owner",
            },
        )
    )
    await _ok(
        await api.put(
            f"/api/v1/installations/{demo.installation}/owner", json={"user_id": owner["id"]}
        )
    )
    bought = await _ok(
        await api.post(
            "/api/v1/subscriptions",
            json={
                "installation_id": demo.installation,
                "product": PRODUCT,
                "purchaser_id": owner["id"],
                "pay_with": "card",
                "card_token": CARDS["ok"],
            },
        )
    )
    sub: dict[str, Any] = bought["subscription"]
    console.print(
        f"owner bought Remote Services with a test card (order {bought['order_status']}, "
        f"{bought['due_now_cents'] / 100:.2f} charged): {sub['status_text']}"
    )
    if card == "declined":
        # the API way to change the card on file: deactivate, reactivate with the new card
        await _ok(await api.post(f"/api/v1/subscriptions/{sub['id']}/deactivate"))
        again = await _ok(
            await api.post(
                f"/api/v1/subscriptions/{sub['id']}/reactivate",
                json={"pay_with": "card", "card_token": CARDS["declined"]},
            )
        )
        sub = again["subscription"]
        console.print("card on file replaced by a [red]declining[/red] test card")
    return sub


async def _events(api: httpx.AsyncClient, *, inst: str, since: int) -> list[str]:
    """What the cloud did after ``since``: e-mails queued and renewal orders placed."""
    lines = []
    mails = await _ok(await api.get("/api/v1/notifications", params={"limit": 50}))
    for mail in sorted(mails, key=lambda m: m["id"]):
        if mail["created_at"] > since:
            lines.append(f"e-mail [bold]{mail['kind']}[/bold]: {mail['subject']}")
    orders = await _ok(
        await api.get(
            "/api/v1/orders", params={"installation_id": inst, "type": "renewal", "limit": 50}
        )
    )
    for order in sorted(orders, key=lambda o: o["id"]):
        if order["created_at"] > since:
            colour = "green" if order["status"] == "Succeed" else "red"
            lines.append(
                f"renewal charge {order['number']} {order['amount_cents'] / 100:.2f} "
                f"{order['currency']}: [{colour}]{order['status']}[/{colour}]"
            )
    return lines


async def run_fast_forward(
    *,
    devices: int,
    days: int,
    card: str,
    embedded: bool,
    console: Console,
    start: int | None = None,
) -> None:
    """Buy a subscription, then move the test clock ``days`` days, showing the devices follow.

    Args:
        start: epoch seconds the test clock starts at (the purchase); default now.
    """
    from cloud.testclock import TestClock

    if card not in CARDS:
        raise ValueError(f"card must be one of {', '.join(CARDS)}, not {card!r}")
    console.rule(f"Entitle demo: {days} days on the test clock")
    clock = TestClock(start)
    async with running_stack(
        devices=devices, embedded=embedded, console=console, test_clock=clock
    ) as demo:
        await demo.wait_until(lambda a: a.state.ver > 0, within=10)
        await demo.wait_heard(within=10)  # only a connected installation can buy
        sub = await _buy(demo, card=card, console=console)
        await _follow(demo, sub, console)
        console.print(f"{_day(clock())} (day 0) {_devices(demo.agents)}")
        shown = (sub["status_text"], _devices(demo.agents))
        for day in range(1, days + 1):
            before = clock()
            moved = await _ok(await demo.api.post("/api/v1/test-clock/advance", json={"days": 1}))
            events = await _events(demo.api, inst=demo.installation, since=before)
            sub = await _ok(await demo.api.get(f"/api/v1/subscriptions/{sub['id']}"))
            await _follow(demo, sub, console)
            now = (sub["status_text"], _devices(demo.agents))
            if events or now != shown:
                console.print(f"[bold]{_day(moved['now'])}[/bold] (day {day})")
                for line in events:
                    console.print(f"  {line}")
                if now[0] != shown[0]:
                    console.print(f"  subscription: {sub['status_text']}")
                console.print(f"  {now[1]}")
            elif day % 30 == 0:
                console.print(f"{_day(moved['now'])} (day {day}) {now[1]}")
            shown = now
        console.print(
            f"after {days} days ({_day(clock())}): subscription {sub['status_text']}; "
            f"{_devices(demo.agents)}"
        )
    console.rule("demo finished")
