"""The services' refusals reach the dashboard in the reader's language.

A refusal a page can show (409, 422, 403, 402, 429: the message under the error
page's title, or beside a form) is raised with its English text marked ``N_`` and its
values as parameters (``Conflict(N_("order %(number)s is settled"), number=n)``):
``str()`` stays the API's English ``detail``; the page translates the template
(:meth:`cloud.errors.CloudError.text`). :mod:`test_translations` then finds the
Dutch of every marked text. 404s (one generic page), 401s (the login page) and
5xx (a generic page) show no service text.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import cloud
from cloud import errors as ce
from cloud.errors import N_, CloudError, Conflict, Forbidden, Msg
from cloud.web.assets import CLOUD_DIR
from tests.cloud.harness import PASSWORD, Cloud, new_user
from tests.cloud.pages import csrf_of, signed_in

SHOWN = (
    ce.Conflict,
    ce.InvalidRequest,
    ce.InvalidGrant,
    ce.Forbidden,
    ce.PaymentDeclined,
    ce.LoginThrottled,
)
# raise sites that pass on a text made elsewhere, and where that text is marked
PASSED_ON: dict[str, str] = {
    "cloud/accounts/deps.py": "Forbidden(*refusal(...)): accounts.rules.refusal marks it",
}


def _shown_classes() -> dict[str, type[CloudError]]:
    found: dict[str, type[CloudError]] = {}
    for module in pkgutil.walk_packages(cloud.__path__, "cloud."):
        if ".migrations" in module.name:
            continue
        for name, value in vars(importlib.import_module(module.name)).items():
            if inspect.isclass(value) and issubclass(value, SHOWN):
                found[name] = value
    return found


def _unmarked() -> list[str]:
    classes = _shown_classes()
    bad = []
    for path in sorted(CLOUD_DIR.rglob("*.py")):
        where = str(path.relative_to(CLOUD_DIR.parent))
        for node in ast.walk(ast.parse(path.read_text(), where)):
            if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)):
                continue
            func = node.exc.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if name not in classes:
                continue
            first = node.exc.args[0] if node.exc.args else None
            marked = (
                isinstance(first, ast.Call)
                and isinstance(first.func, ast.Name)
                and first.func.id == "N_"
                and len(first.args) == 1
                and isinstance(first.args[0], ast.Constant)
                and isinstance(first.args[0].value, str)
            )
            if not marked and where not in PASSED_ON:
                bad.append(f"{where}:{node.lineno}: raise {name}(...)")
    return bad


def test_every_refusal_a_page_can_show_is_marked_for_translation() -> None:
    unmarked = _unmarked()
    assert not unmarked, "raise with N_('...') and parameters:\n" + "\n".join(unmarked)


def test_the_scan_sees_the_classes_and_a_bare_text(tmp_path: Path) -> None:
    """The check can fail: it knows the page-visible classes, and an f-string is not marked."""
    classes = _shown_classes()
    assert {"Conflict", "InvalidRequest", "Forbidden", "RmaRefused"} <= set(classes)
    assert "NotFound" not in classes and "UnknownOrder" not in classes
    tree = ast.parse('raise Conflict(f"order {n} is settled")')
    raise_node = tree.body[0]
    assert isinstance(raise_node, ast.Raise) and isinstance(raise_node.exc, ast.Call)
    assert not isinstance(raise_node.exc.args[0], ast.Call)


def test_english_for_the_api_and_the_reader_s_language_for_pages() -> None:
    error = Conflict(N_("order %(number)s is settled: refund it"), number="ORD-7")
    assert str(error) == "order ORD-7 is settled: refund it"
    dutch = {"order %(number)s is settled: refund it": "order %(number)s is verrekend"}
    assert error.text(lambda m: dutch.get(m, m)) == "order ORD-7 is verrekend"
    assert error.text(lambda m: m) == str(error)
    nested = Forbidden(N_("%(why)s; ask an administrator"), why=N_("support never pays"))
    assert isinstance(nested.params["why"], Msg)
    words = {
        "%(why)s; ask an administrator": "%(why)s; vraag een beheerder",
        "support never pays": "support betaalt nooit",
    }
    assert nested.text(lambda m: words.get(m, m)) == "support betaalt nooit; vraag een beheerder"
    plain = Conflict("a text with 100% and no parameters")
    assert str(plain) == plain.text(lambda m: m) == "a text with 100% and no parameters"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_dutch_reader_sees_the_refusals_in_dutch_and_the_api_stays_english(
    cloud: Cloud,
) -> None:
    """A form's refusal (the admin's duplicate e-mail, 422) and an error page (support's
    forged blacklist POST, 403, its specific reason translated too) in Dutch; the API's
    ``detail`` for the same refusal stays the English it always was."""
    owner = new_user(cloud.app, role="owner", email="taken@customer.example")
    nl = {"Accept-Language": "nl-NL,nl;q=0.9"}
    async with signed_in(cloud.app, role="admin") as (http, _):
        form = await http.get("/admin/users/new", headers=nl)
        duplicate = await http.post(
            "/admin/users/new",
            headers=nl,
            data={
                "csrf_token": csrf_of(form.text),
                "email": "taken@customer.example",
                "name": "Again",
                "password": PASSWORD,
                "role": "owner",
                "company": "",
            },
        )
        assert duplicate.status_code == 422
        assert "er bestaat al een gebruiker met het e-mailadres taken@customer.example" in (
            duplicate.text
        )
    async with signed_in(cloud.app, role="support") as (http, _):
        page = await http.get("/profile", headers=nl)
        forged = await http.post(
            f"/customers/users/{owner}/blacklist",
            headers=nl,
            data={"csrf_token": csrf_of(page.text), "blacklisted": "on", "reason": "forged"},
        )
        assert forged.status_code == 403
        assert (
            "alleen klantenservicebeheerders en beheerders zetten iemand op de zwarte lijst "
            "(vereist &#39;blacklist&#39;" in forged.text
        )
        assert "invalid_request" not in forged.text and "[{" not in forged.text
    api = await cloud.http.post(
        "/api/v1/users",
        headers=nl,
        json={
            "email": "taken@customer.example",
            "name": "Again",
            "password": PASSWORD,
            "role": "owner",
        },
    )
    assert api.status_code == 409
    assert api.json()["detail"] == "a user with the e-mail taken@customer.example exists already"
