"""Property-based API tests (schemathesis) against the app's own ``/openapi.json``, in-process.

Each operation gets positive and negative cases from ``operation.as_strategy``
under ``@given`` (``schemathesis.pytest.from_fixture`` needs a pytest node
attribute that pytest 9.2 no longer has).

With an API key: no 5xx, every status and body as documented, invalid input
refused, valid input accepted; schemathesis' ``ignored_auth`` check re-sends
requests without the key and with a wrong one and fails unless they are
refused. About half the generated installation ids, device ids and feature
names are swapped for seeded ones, and every operation must succeed at least
once, so grants, revocations and deletions run their real paths, not only
their 404s.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.python import asgi

from cloud import create_app
from cloud.apikeys import bootstrap_api_key
from cloud.health import Incoming
from cloud.testing import AccountsSimulator, PublisherSimulator
from entitle.config import Settings
from protocol.commands import ok_result, result_to_json
from protocol.topics import device_topic
from tests.cloud.harness import PASSWORD, FakeClock

MAX_EXAMPLES = 25
SEEDED_EMAIL = "owner@seeded.example"


@dataclass(frozen=True)
class Seeded:
    installation_id: str
    device_ids: tuple[str, ...]
    feature: str = "remote_access"
    user_id: int = 0
    company_id: int = 0
    ticket_id: int = 0  # its device (device_ids[1]) answered a self-test: hardware fault
    command_id: str = ""
    subscription_id: str = ""
    order_id: int = 0  # the seeded subscription's invoiced (paid) order
    partner_id: int = 0  # an invoiced partner: purchases take effect on save


# JSON Schema cannot say "a partner user needs a company, others none" or "the
# owner of an installation has the owner role": those are 422s of valid shapes
_CROSS_FIELD_RULES = [
    "POST /api/v1/users",
    "PATCH /api/v1/users/{user_id}",
    "PUT /api/v1/installations/{installation_id}/owner",
]
# Catalogue and payment rules: a product the catalogue lacks, a term it does not
# offer, a renewal outside 1-60 months, a sandbox card that declines (402)
_BUSINESS_RULES = [
    "POST /api/v1/subscriptions",
    "POST /api/v1/subscriptions/{sub_id}/renew",
    "POST /api/v1/subscriptions/{sub_id}/reactivate",
    "POST /api/v1/orders/{order_id}/pay",
    "POST /api/v1/orders/{order_id}/refund",
    "POST /api/v1/orders/{order_id}/void",
]
# Operations whose success needs a state random calls cannot reach in a few
# examples; each has its own test of the successful path, named here.
_STATEFUL = {
    "POST /api/v1/notifications/{notification_id}/retry": (
        "a mail that failed for good: tests/cloud/test_notifications_sender.py"
    ),
    "POST /api/v1/test-clock/advance": "the test clock on: tests/cloud/test_subscriptions.py",
    "POST /api/v1/orders/{order_id}/pay": "an unpaid card order: tests/cloud/test_orders_api.py",
    "POST /api/v1/orders/{order_id}/cancel": "an unpaid order: tests/cloud/test_orders_api.py",
    "POST /api/v1/orders/{order_id}/void": "an unsettled charge: tests/cloud/test_refunds.py",
    "POST /api/v1/orders/{order_id}/refund": "a settled charge: tests/cloud/test_refunds.py",
    # random calls close the seeded ticket or move the test clock past the self-test's age
    "POST /api/v1/tickets/{ticket_id}/rma": (
        "an open ticket, its device's fresh hardware fault: tests/cloud/test_tickets_api.py"
    ),
}


@pytest.fixture
def api(settings: Settings, clock: FakeClock) -> Iterator[tuple[schemathesis.BaseSchema, Seeded]]:
    app = create_app(
        settings, publisher=PublisherSimulator(), accounts=AccountsSimulator(), clock=clock
    )
    key = bootstrap_api_key(settings.effective_database_url, name="schemathesis", now=clock())
    config = schemathesis.Config.from_dict(
        {
            "auth": {"openapi": {"ApiKey": {"bearer": key}}},
            "generation": {"max-examples": MAX_EXAMPLES},
            # JSON Schema cannot say "the whole token fits in 64 KiB" or "a device
            # decodes these parameters": a grant may be refused for those with a 422
            "operations": [
                {
                    "include-name": "POST /api/v1/installations/{installation_id}/grants",
                    "checks": {
                        "positive_data_acceptance": {"expected-statuses": ["2xx", 401, 404, 422]}
                    },
                }
            ]
            + [
                {
                    "include-name": name,
                    "checks": {
                        "positive_data_acceptance": {
                            "expected-statuses": ["2xx", 401, 403, 404, 409, 422]
                        }
                    },
                }
                for name in _CROSS_FIELD_RULES
            ]
            + [
                {
                    "include-name": name,
                    "checks": {
                        "positive_data_acceptance": {
                            "expected-statuses": ["2xx", 401, 402, 403, 404, 409, 422]
                        }
                    },
                }
                for name in _BUSINESS_RULES
            ],
        }
    )
    try:
        schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
        with asgi.get_client(app) as http:  # the lifespan schemathesis started: one loop
            http.headers["Authorization"] = f"Bearer {key}"
            response = http.post("/api/v1/installations", json={"name": "seeded"})
            installation_id = response.json()["id"]
            device_ids = []
            for kind in ("gateway", "camera"):
                body = {"installation_id": installation_id, "kind": kind}
                device_ids.append(http.post("/api/v1/devices", json=body).json()["device_id"])
            grant = {"feature": Seeded.feature, "until": clock() + 86_400}
            http.post(f"/api/v1/installations/{installation_id}/grants", json=grant)
            company = {"name": "seeded", "payment_type": "invoice"}
            company_id = http.post("/api/v1/companies", json=company).json()["id"]
            user = {"email": "o@x.example", "name": "o", "password": PASSWORD, "role": "owner"}
            user_id = http.post("/api/v1/users", json=user).json()["id"]
            login = {**user, "email": SEEDED_EMAIL}  # never a target of the id swaps
            assert http.post("/api/v1/users", json=login).status_code == 201
            ticket_id, command_id = _seed_rma(app, http, installation_id, device_ids[1])
            partner = {
                "email": "p@x.example",
                "name": "p",
                "password": PASSWORD,
                "role": "partner",
                "company_id": company_id,
            }
            partner_id = http.post("/api/v1/users", json=partner).json()["id"]
            bought = http.post(
                "/api/v1/subscriptions",
                json={
                    "installation_id": installation_id,
                    "product": "TSF12125",
                    "pay_with": "invoice",
                    "purchaser_id": partner_id,
                },
            )
            assert bought.status_code == 201, bought.text
            subscription_id = str(bought.json()["subscription"]["id"])
            order_id = int(bought.json()["order_id"])
        yield (
            schema,
            Seeded(
                installation_id,
                tuple(device_ids),
                user_id=user_id,
                company_id=company_id,
                ticket_id=ticket_id,
                command_id=command_id,
                subscription_id=subscription_id,
                order_id=order_id,
                partner_id=partner_id,
            ),
        )
    finally:
        asgi.shutdown_lifespans()


def _seed_rma(app: Any, http: Any, installation_id: str, device_id: str) -> tuple[int, str]:
    """A ticket and a self-test its device answered with a hardware fault (RMA approvable)."""
    ticket = {
        "category": "device_fault",
        "subject": "seeded",
        "body": "seeded",
        "installation_id": installation_id,
        "device_ids": [device_id],
    }
    ticket_id = int(http.post("/api/v1/tickets", json=ticket).json()["id"])
    sent = http.post(f"/api/v1/devices/{device_id}/commands", json={"cmd": "self_test"})
    command_id = str(sent.json()["id"])
    fault = {"passed": False, "hardware_fault": True, "faults": []}
    answer = result_to_json(ok_result(command_id, device_id=device_id, result=fault))
    incoming = Incoming(device_topic(device_id, "cmd/res"), answer)
    assert app.state.cloud.health_ingest.process([incoming]).answers == 1
    return ticket_id, command_id


def _valid_id(value: object) -> bool:
    return type(value) is int and 1 <= value <= 2**31 - 1


def _valid_login(body: object) -> bool:
    """A login body valid in itself (a negative case must stay negative)."""
    return (
        isinstance(body, dict)
        and set(body) == {"email", "password"}
        and all(isinstance(v, str) and 0 < len(v) <= 254 and v.isprintable() for v in body.values())
    )


def _aim_at_seeded(case: schemathesis.Case, seeded: Seeded) -> None:
    """Swap about half the generated ids for existing ones (deterministic per case).

    Deletions aim at the first seeded device only, so the second one stays for
    the operations that read it.
    """

    def swap(value: object, known: str) -> object:
        return known if zlib.crc32(repr(value).encode()) % 2 == 0 else value

    path = case.path_parameters
    if path and "installation_id" in path:
        path["installation_id"] = swap(path["installation_id"], seeded.installation_id)
    if path and "device_id" in path:
        known = seeded.device_ids[0 if case.method.upper() == "DELETE" else 1]
        path["device_id"] = swap(path["device_id"], known)
    if path and "feature" in path:
        path["feature"] = swap(path["feature"], seeded.feature)
    # only ids valid in themselves are swapped: a negative case stays negative
    if path and "command_id" in path:
        path["command_id"] = swap(path["command_id"], seeded.command_id)
    query = case.query
    if isinstance(query, dict) and isinstance(query.get("installation_id"), str):
        query["installation_id"] = swap(query["installation_id"], seeded.installation_id)
    if path and "sub_id" in path:
        path["sub_id"] = swap(path["sub_id"], seeded.subscription_id)
    ids = (
        ("user_id", seeded.user_id),
        ("company_id", seeded.company_id),
        ("order_id", seeded.order_id),
        ("purchaser_id", seeded.partner_id),
    )
    for name, known_id in (*ids, ("ticket_id", seeded.ticket_id)):
        for where in (path, case.body):
            if isinstance(where, dict) and _valid_id(where.get(name)):
                where[name] = swap(where[name], known_id)
    body = case.body
    if case.path == "/api/v1/auth/login" and _valid_login(body):
        if zlib.crc32(repr(body).encode()) % 2 == 0:  # the seeded login's own credentials
            body.update(email=SEEDED_EMAIL, password=PASSWORD)
    if isinstance(body, dict) and "installation_id" in body:
        body["installation_id"] = swap(body["installation_id"], seeded.installation_id)
    if isinstance(body, dict) and "feature" in body:
        body["feature"] = swap(body["feature"], seeded.feature)
    if isinstance(body, dict) and isinstance(body.get("product"), str):
        if swap(body["product"], "") == "":  # half the purchases: a valid one, in full
            for name in ("term_months", "start", "card_token"):
                body.pop(name, None)
            body.update(
                product="TSF16100",
                pay_with="invoice",
                installation_id=seeded.installation_id,
                purchaser_id=seeded.partner_id,
            )
    if case.path.endswith("/renew") and isinstance(body, dict) and _valid_id(body.get("months")):
        body["months"] = swap(body["months"], 1)
    if case.path.endswith("/rma") and isinstance(body, dict) and "device_id" in body:
        body["device_id"] = swap(body["device_id"], seeded.device_ids[1])


def test_api_conforms_to_its_schema(
    api: tuple[schemathesis.BaseSchema, Seeded], subtests: pytest.Subtests
) -> None:
    schema, seeded = api
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12
    succeeded: set[str] = set()
    for operation in operations:
        inputs = [operation.path_parameters, operation.query, operation.headers, operation.body]
        # an operation without parameters or body has nothing to make invalid
        modes = [GenerationMode.POSITIVE] + [GenerationMode.NEGATIVE] * any(map(len, inputs))
        for mode in modes:

            @given(case=operation.as_strategy(mode))
            @settings(
                max_examples=MAX_EXAMPLES,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                derandomize=True,
                database=None,
            )
            def check(case: schemathesis.Case) -> None:
                _aim_at_seeded(case, seeded)
                if case.call_and_validate().status_code < 300:
                    succeeded.add(case.operation.label)

            with subtests.test(msg=f"{operation.label} {mode.value}"):
                check()
    # not only 401s, 404s and 422s: every operation did its real work at least once
    never = {operation.label for operation in operations} - succeeded - set(_STATEFUL)
    assert not never, f"never succeeded: {sorted(never)}"
