"""Property-based API tests (schemathesis) against the app's own OpenAPI document, in-process.

One pytest item per operation and database (SQLite, PostgreSQL when it is
there), each with a freshly seeded cloud. Each operation gets positive and
negative cases from ``operation.as_strategy`` under ``@given``
(``schemathesis.pytest.from_fixture`` needs a pytest node attribute that
pytest 9.2 no longer has), seeded from the operation's name: a run sends the
requests the previous one sent. The cloud draws no random ids either
(``secrets.token_hex`` counts), there is no example database, and no
shrinking: the app keeps its state from one example to the next, so a
replayed example need not fail again (hypothesis called that flaky).

With an API key: no 5xx, every status and body as documented, invalid input
refused (no schema-violating request accepted), valid input accepted;
schemathesis' ``ignored_auth`` check re-sends requests without the key and
with a wrong one and fails unless they are refused. About half the generated
installation ids, device ids, feature names and other ids are swapped for
seeded ones, and every operation must succeed at least once, so grants,
revocations and deletions run their real paths, not only their 404s. Only
values valid in themselves are swapped: a negative case stays negative. (An
invalid device id swapped for the seeded one made ``?limit=1&=`` on
health/history a valid request that the check expected refused; that request
and every other failure schemathesis found are explicit tests in
tests/cloud/test_api_input.py.)
"""

from __future__ import annotations

import copy
import functools
import itertools
import re
import secrets
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from argon2 import PasswordHasher
from hypothesis import HealthCheck, Phase, given, seed, settings
from schemathesis import GenerationMode
from schemathesis.python import asgi

from cloud import create_app
from cloud.accounts import passwords
from cloud.accounts.apikeys import bootstrap_api_key
from cloud.health.ingest import Incoming
from cloud.settings import CloudSettings
from cloud.testing import AccountsSimulator, PublisherSimulator
from protocol.commands import ok_result, result_to_json
from protocol.topics import device_topic
from tests.cloud.harness import PASSWORD, FakeClock, report_health

MAX_EXAMPLES = 25
SEEDED_EMAIL = "owner@seeded.example"
_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
# the string ids swapped for seeded ones: each has one pattern across the API
_SWAPPED = ("installation_id", "device_id", "feature", "command_id", "sub_id")


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
    repair_id: int = 0  # a replacement of device_ids[1], shipped (its shipment: shipment_id)
    shipment_id: int = 0


# JSON Schema cannot say "a partner user needs a company, others none" or "the
# owner of an installation has the owner role": those are 422s of valid shapes
_CROSS_FIELD_RULES = [
    "POST /api/v1/users",
    "PATCH /api/v1/users/{user_id}",
    "PUT /api/v1/installations/{installation_id}/owner",
    # the responsible person must be a support user; the third line needs a plan and an ETA
    # in the future; an attachment's type is read from its bytes (tests/cloud/tickets)
    "POST /api/v1/tickets/{ticket_id}/responsible",
    "POST /api/v1/tickets/{ticket_id}/stage",
    "POST /api/v1/tickets/{ticket_id}/attachments",
    # a VAT number or a GSTIN, not both; their check digits; the VAT prefix of the country
    "PATCH /api/v1/companies/{company_id}",
    "PUT /api/v1/me/company/invoicing",
    # one's own company is a partner user's: the walk's staff key has none (404)
    "GET /api/v1/me/company",
]
# Catalogue and payment rules: a product the catalogue lacks, a term it does not
# offer, a renewal outside 1-60 months, a sandbox card that declines (402)
_BUSINESS_RULES = [
    "POST /api/v1/subscriptions",
    "POST /api/v1/subscriptions/{sub_id}/renew",
    "POST /api/v1/subscriptions/{sub_id}/reactivate",
    "POST /api/v1/subscriptions/cameras",
    "POST /api/v1/subscriptions/cameras/plan-change",
    "POST /api/v1/subscriptions/users",  # a name twice, one who has it, over the maximum
    "GET /api/v1/subscriptions/{sub_id}/plan-change/quote",
    "POST /api/v1/subscriptions/{sub_id}/plan-change",
    "POST /api/v1/orders/{order_id}/pay",
    "POST /api/v1/orders/{order_id}/refund",
    "POST /api/v1/orders/{order_id}/void",
    # a repair's state machine refuses a step its status does not allow (409), a step not
    # the caller's (403), a repair of a device with an open one (409), a declined card (402),
    # a replacement parcel without its device's serial or another parcel with one (422)
    "POST /api/v1/repairs",
    "POST /api/v1/repairs/{repair_id}/steps",
    "POST /api/v1/repairs/{repair_id}/quote",
    "POST /api/v1/repairs/{repair_id}/accept",
    "POST /api/v1/repairs/{repair_id}/shipments",
    "POST /api/v1/repairs/{repair_id}/shipments/{shipment_id}/reship",
    "POST /api/v1/repairs/{repair_id}/shipments/{shipment_id}/cancel",
    "POST /api/v1/repairs/{repair_id}/cancel",
    # a checkout's catalogue/term/scope refusals, a renewal date not on a month's first,
    # a credit reason of blanks only
    "POST /api/v1/subscriptions/checkout",
    "POST /api/v1/subscriptions/{sub_id}/billing-date",
    "POST /api/v1/customers/{user_id}/credit",
]
# Operations whose success needs a state random calls cannot reach in a few
# examples; each has its own test of the successful path, named here.
_STATEFUL = {
    "POST /api/v1/notifications/{notification_id}/retry": (
        "a mail that failed for good: tests/cloud/notifications/test_notifications_sender.py"
    ),
    "POST /api/v1/test-clock/advance": (
        "the test clock on: tests/cloud/subscriptions/test_subscriptions.py"
    ),
    "POST /api/v1/orders/{order_id}/pay": (
        "an unpaid card order: tests/cloud/billing/test_orders_api.py"
    ),
    "POST /api/v1/orders/{order_id}/cancel": (
        "an unpaid order: tests/cloud/billing/test_orders_api.py"
    ),
    "POST /api/v1/orders/{order_id}/void": (
        "an unsettled charge: tests/cloud/billing/test_refunds.py"
    ),
    "POST /api/v1/orders/{order_id}/refund": (
        "a settled charge: tests/cloud/billing/test_refunds.py"
    ),
    "PATCH /api/v1/tickets/{ticket_id}/tasks/{task_id}": (
        "a task on the ticket: tests/cloud/tickets/test_manual_api.py"
    ),
    "DELETE /api/v1/tickets/{ticket_id}/tasks/{task_id}": (
        "a task on the ticket: tests/cloud/tickets/test_manual_api.py"
    ),
    "GET /api/v1/tickets/{ticket_id}/attachments/{attachment_id}": (
        "an attached file: tests/cloud/tickets/test_manual_api.py"
    ),
    "POST /api/v1/tickets/{ticket_id}/attachments": (
        "a file of an accepted type: tests/cloud/tickets/test_manual_api.py"
    ),
    "DELETE /api/v1/tickets/{ticket_id}/attachments/{attachment_id}": (
        "an attached file: tests/cloud/tickets/test_manual_api.py"
    ),
    "GET /api/v1/me/company": (
        "a partner company's user (the walk is staff's): tests/cloud/accounts/test_own_invoicing.py"
    ),
    "PUT /api/v1/me/company/invoicing": (
        "a partner company's user (the walk is staff's): tests/cloud/accounts/test_own_invoicing.py"
    ),
    "POST /api/v1/orders/{order_id}/hide": (
        "a customer's own order (staff may not hide): tests/cloud/billing/test_order_actions.py"
    ),
    "POST /api/v1/orders/{order_id}/unhide": (
        "a customer's own order (staff may not hide): tests/cloud/billing/test_order_actions.py"
    ),
    "POST /api/v1/subscriptions/cameras": (
        "an installation with cameras: tests/cloud/subscriptions/test_plans.py"
    ),
    "POST /api/v1/subscriptions/cameras/plan-change": (
        "cameras with plans: tests/cloud/subscriptions/test_plans.py"
    ),
    "POST /api/v1/subscriptions/users": (
        "a user acting for an installation of theirs: "
        "tests/cloud/subscriptions/test_office_users.py"
    ),
    "GET /api/v1/subscriptions/{sub_id}/plan-change/quote": (
        "an active camera plan: tests/cloud/subscriptions/test_plans.py"
    ),
    "POST /api/v1/subscriptions/{sub_id}/plan-change": (
        "an active camera plan: tests/cloud/subscriptions/test_plans.py"
    ),
    "POST /api/v1/subscriptions/checkout": (
        "installations of one's own, each without the service: "
        "tests/cloud/subscriptions/test_checkout.py"
    ),
    "POST /api/v1/subscriptions/{sub_id}/bill-now": (
        "a renewing subscription within a term of its end: "
        "tests/cloud/subscriptions/test_order_actions.py"
    ),
    "POST /api/v1/subscriptions/{sub_id}/billing-date": (
        "a month's first after this month: tests/cloud/subscriptions/test_order_actions.py"
    ),
    "POST /api/v1/orders/{order_id}/lines/{line_id}/refund": (
        "a settled renewal order's line: tests/cloud/subscriptions/test_renewals_consolidated.py"
    ),
    # random calls close the seeded ticket or move the test clock past the self-test's age
    "POST /api/v1/tickets/{ticket_id}/rma": (
        "an open ticket, its device's fresh hardware fault: tests/cloud/tickets/test_tickets_api.py"
    ),
    # the seeded repair is a shipped replacement: a new one, a quote, its payment and a
    # cancellation need other states (tests/cloud/repairs/test_repairs_api.py has each)
    "POST /api/v1/repairs": "a device without an open repair: tests/cloud/repairs",
    "POST /api/v1/repairs/{repair_id}/quote": "an out-of-warranty repair: tests/cloud/repairs",
    "POST /api/v1/repairs/{repair_id}/accept": "a quoted repair: tests/cloud/repairs",
    "POST /api/v1/repairs/{repair_id}/cancel": "a repair not shipped yet: tests/cloud/repairs",
}


@functools.cache
def _document() -> dict[str, Any]:
    """The app's OpenAPI document; the same for every app, so it is built once per run."""
    unused = CloudSettings(
        data_dir=Path("/nonexistent"), broker_url="mqtt://cloud@broker.example:1883"
    )
    app = create_app(unused, publisher=PublisherSimulator(), accounts=AccountsSimulator())
    return app.openapi()


def _labels() -> list[str]:
    paths = _document()["paths"]
    return [f"{m.upper()} {path}" for path, item in paths.items() for m in item if m in _METHODS]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One item per operation of the document (and per database, by the settings fixture)."""
    if "label" in metafunc.fixturenames:
        metafunc.parametrize("label", _labels())


def _anchored(schema: dict[str, Any]) -> str | None:
    for option in [schema, *schema.get("anyOf", [])]:
        if "pattern" in option:
            return str(option["pattern"])
    return None


@functools.cache
def _patterns() -> dict[str, re.Pattern[str]]:
    """The pattern of each swapped string id, from the document's parameters."""
    found: dict[str, str] = {}
    for item in _document()["paths"].values():
        for method, operation in item.items():
            for parameter in operation.get("parameters", []) if method in _METHODS else []:
                pattern = _anchored(parameter["schema"])
                if parameter["name"] in _SWAPPED and pattern is not None:
                    assert found.setdefault(parameter["name"], pattern) == pattern, parameter
    assert set(found) == set(_SWAPPED), found
    # "^...$" in Python also matches before a final newline: match the whole value
    return {name: re.compile(p.removeprefix("^").removesuffix("$")) for name, p in found.items()}


@pytest.fixture
def api(
    settings: CloudSettings, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[schemathesis.BaseSchema, Seeded]]:
    counter = itertools.count(1)
    # ids the cloud would draw at random (installations, subscriptions, commands, order
    # numbers) count up instead: the seeded ids and every request are the same each run
    monkeypatch.setattr(secrets, "token_hex", lambda n=32: f"{next(counter):0{2 * n}x}")
    # argon2 at its production cost takes 0.4 s a hash here (users, logins, device
    # passwords); the same algorithm at its lowest cost keeps the walk about the API
    monkeypatch.setattr(
        passwords, "_HASHER", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    )
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
            ]
            + [
                # a binary part is any bytes: a "number" is the file b"123", a text log the
                # app accepts by reading its bytes (what it refuses, and why, is in
                # tests/cloud/tickets/test_manual_api.py)
                {
                    "include-name": "POST /api/v1/tickets/{ticket_id}/attachments",
                    "checks": {"negative_data_rejection": {"enabled": False}},
                }
            ],
        }
    )
    try:
        schema = schemathesis.openapi.from_dict(copy.deepcopy(_document()), config=config)
        schema.app = app  # what schemathesis.openapi.from_asgi does after fetching the document
        with asgi.get_client(app) as http:  # the lifespan schemathesis started: one loop
            http.headers["Authorization"] = f"Bearer {key}"
            response = http.post("/api/v1/installations", json={"name": "seeded"})
            installation_id = response.json()["id"]
            device_ids = []
            for kind in ("gateway", "camera"):
                body = {"installation_id": installation_id, "kind": kind, "device_id": f"s-{kind}"}
                device_ids.append(http.post("/api/v1/devices", json=body).json()["device_id"])
            report_health(app, device_ids[0])  # connected: services can be bought
            grant = {"feature": Seeded.feature, "until": clock() + 86_400}
            http.post(f"/api/v1/installations/{installation_id}/grants", json=grant)
            company = {"name": "seeded", "payment_type": "invoice"}
            company_id = http.post("/api/v1/companies", json=company).json()["id"]
            integrator = {"company_id": company_id}
            members = f"/api/v1/installations/{installation_id}/integrators"
            assert http.post(members, json=integrator).status_code < 300
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
            repair_id, shipment_id = _seed_repair(http, device_ids[1])
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
                repair_id=repair_id,
                shipment_id=shipment_id,
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


def _seed_repair(http: Any, device_id: str) -> tuple[int, int]:
    """A warranty replacement of the device, approved and shipped: its id and the shipment's."""
    repair = {"device_id": device_id, "problem": "seeded", "ship_to": "seeded"}
    repair_id = int(http.post("/api/v1/repairs", json=repair).json()["id"])
    step = http.post(f"/api/v1/repairs/{repair_id}/steps", json={"step": "approve"})
    assert step.status_code == 200, step.text
    parcel = {"kind": "replacement", "carrier": "DHL", "tracking": "seeded", "serial": "seeded-new"}
    shipped = http.post(f"/api/v1/repairs/{repair_id}/shipments", json=parcel)
    assert shipped.status_code == 201, shipped.text
    return repair_id, int(shipped.json()["shipments"][0]["id"])


def _valid_id(value: object) -> bool:
    return type(value) is int and 1 <= value <= 2**31 - 1


def _valid_login(body: object) -> bool:
    """A login body valid in itself (a negative case must stay negative)."""
    return (
        isinstance(body, dict)
        and set(body) == {"email", "password"}
        and all(isinstance(v, str) and 0 < len(v) <= 254 and v.isprintable() for v in body.values())
    )


def _valid(name: str, value: object) -> bool:
    """A string id valid in itself (its parameter's pattern)."""
    return isinstance(value, str) and _patterns()[name].fullmatch(value) is not None


def _as_written(value: Any) -> Any:
    """``2.0`` as ``2``, all through a JSON value.

    JSON Schema (2020-12, OpenAPI 3.1) counts ``2.0`` as an integer and
    schemathesis draws it for integer fields, but the cloud takes an integer only
    written as one (issue 13: no request is taken on a guess; the schema says so
    in words: tests/cloud/test_api_input.py). Positive cases send the integer.
    """
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _as_written(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_written(v) for v in value]
    return value


def _aim_at_seeded(case: schemathesis.Case, seeded: Seeded, *, positive: bool) -> None:
    """Swap about half the generated ids for existing ones (deterministic per case).

    Only ids valid in themselves are swapped, and a body is rewritten whole
    (a valid purchase) only in positive cases: a negative case stays negative.
    Deletions aim at the first seeded device only, so the second one stays for
    the operations that read it.
    """

    def swap(value: object, known: object) -> object:
        return known if zlib.crc32(repr(value).encode()) % 2 == 0 else value

    device = seeded.device_ids[0 if case.method.upper() == "DELETE" else 1]
    known_strings = {
        "installation_id": seeded.installation_id,
        "device_id": device,
        "feature": seeded.feature,
        "command_id": seeded.command_id,
        "sub_id": seeded.subscription_id,
    }
    known_ints = {
        "user_id": seeded.user_id,
        "company_id": seeded.company_id,
        "order_id": seeded.order_id,
        "purchaser_id": seeded.partner_id,
        "ticket_id": seeded.ticket_id,
        "repair_id": seeded.repair_id,
        "shipment_id": seeded.shipment_id,
    }
    if positive and isinstance(case.body, dict | list | float):
        case.body = _as_written(case.body)
    if positive:  # the same for URL parameters (?company_id=5.0 is refused as a body's 5.0 is)
        for params in (case.path_parameters, case.query):
            if isinstance(params, dict):
                params.update({name: _as_written(value) for name, value in params.items()})
    body = case.body
    for where in (case.path_parameters, case.query, body):
        if not isinstance(where, dict):
            continue
        for name, known in known_strings.items():
            if _valid(name, where.get(name)):
                where[name] = swap(where[name], known)
        for name, known_id in known_ints.items():
            if _valid_id(where.get(name)):
                where[name] = swap(where[name], known_id)
    if (
        isinstance(body, dict)
        and case.path.endswith("/rma")
        and _valid("device_id", body.get("device_id"))
    ):
        body["device_id"] = swap(body["device_id"], seeded.device_ids[1])
    if case.path == "/api/v1/auth/login" and _valid_login(body):
        assert isinstance(body, dict)
        if zlib.crc32(repr(body).encode()) % 2 == 0:  # the seeded login's own credentials
            body.update(email=SEEDED_EMAIL, password=PASSWORD)
    if positive and isinstance(body, dict) and isinstance(body.get("product"), str):
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


def test_the_document_tested_is_the_apps_own(api: tuple[schemathesis.BaseSchema, Seeded]) -> None:
    schema, _ = api
    with asgi.get_client(schema.app) as http:
        assert http.get("/openapi.json").json() == _document()
    assert len(_labels()) >= 12


def _run(operation: Any, mode: GenerationMode, seeded: Seeded) -> bool:
    """Every check on ``MAX_EXAMPLES`` cases of ``mode``; whether one of them succeeded."""
    succeeded = False

    @seed(zlib.crc32(f"{operation.label} {mode.value}".encode()))
    @given(case=operation.as_strategy(mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
    )
    def check(case: schemathesis.Case) -> None:
        nonlocal succeeded
        _aim_at_seeded(case, seeded, positive=mode is GenerationMode.POSITIVE)
        if case.call_and_validate().status_code < 300:
            succeeded = True

    check()
    return succeeded


def test_operation_conforms_to_its_schema(
    api: tuple[schemathesis.BaseSchema, Seeded], label: str
) -> None:
    schema, seeded = api
    method, path = label.split(" ", 1)
    operation = schema[path][method]
    inputs = [operation.path_parameters, operation.query, operation.headers, operation.body]
    # an operation without parameters or body has nothing to make invalid
    modes = [GenerationMode.POSITIVE] + [GenerationMode.NEGATIVE] * any(map(len, inputs))
    succeeded = [_run(operation, mode, seeded) for mode in modes]
    # not only 401s, 404s and 422s: the operation did its real work at least once
    assert any(succeeded) or label in _STATEFUL, f"{label} never succeeded"
