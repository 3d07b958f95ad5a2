"""Typed errors the cloud raises on purpose; routes turn them into HTTP statuses.

::

    EntitleError (protocol.errors)
    └── CloudError
        ├── NotFound                 an id that does not exist (404)
        │   ├── UnknownInstallation
        │   ├── UnknownDevice
        │   ├── UnknownGrant
        │   └── UnknownApiKey
        ├── Conflict                 the request clashes with stored state (409)
        │   ├── InstallationFull     an 11th controller in one installation
        │   ├── DeviceExists
        │   └── AccountRefused       the broker accounts adapter refused the device id
        ├── InvalidGrant             a grant the protocol cannot carry (422)
        ├── InvalidRequest           input that the rules refuse before anything changes (422)
        │   ├── UnknownProduct       a product code not in the catalogue
        │   └── BadTerm              a term not offered, > 60 months, or a date in the past
        ├── InvalidTransition        (a Conflict, 409) a state machine refuses the change in
        │                            its state: reactivating an expired subscription,
        │                            moving a closed ticket
        ├── SubscriptionConflict     (a Conflict, 409) the subscription's state forbids this
        │   ├── SubscriptionExists   one subscription per service per installation (device,
        │   │                        user)
        │   └── (cloud.subscriptions.errors) PreconditionFailed (NotConnected,
        │       FirmwareTooOld), UserLimitReached, PlanChangeRefused (NothingRefundable)
        ├── UnknownSubscription      (a NotFound, 404)
        ├── PaymentDeclined          the card was declined at purchase; nothing was bought (402)
        ├── ContentTooLarge          an upload over its limit; nothing was stored (413)
        ├── UpstreamFailed           the payment provider (a service we rely on) failed (502)
        ├── NotAuthenticated         no usable API key on a request (401)
        │   ├── MissingApiKey
        │   ├── InvalidApiKey        unknown key, or the secret does not match
        │   ├── RevokedApiKey
        │   ├── LoginFailed          wrong e-mail or password, or a disabled user
        │   └── SessionExpired       login cookie unknown, expired or idle
        ├── Forbidden                role or scope refuses the action (403)
        │   └── Blacklisted          a blacklisted customer may not buy or change
        ├── LoginThrottled           too many failed logins for an account (429)
        ├── BrokerUnavailable        the broker did not take a device login; retry (503)
        ├── UnknownUser, UnknownCompany   (NotFound, 404)
        ├── AccountExists            (a Conflict, 409) e-mail or partner id taken
        └── KeyFileError             issuer key files missing, corrupt or exposed
            └── InsecureKeyFile      a private key readable by group or others

Transport failures (broker down) are :class:`protocol.errors.TransportError`.

A feature's own leaves hang on these branches and live beside the feature;
the HTTP status is the branch's::

    NotFound      UnknownOrder (cloud.billing.errors), UnknownCommand
                  (cloud.health.commands), UnknownTicket, UnknownTask, UnknownAttachment
                  (cloud.tickets.service), UnknownRepair, UnknownShipment
                  (cloud.repairs.access, .service)
    Forbidden     CategoryRefused (cloud.tickets.rules) a support-only category,
                  NotYourAttachment (cloud.tickets.rules.files) a customer deleting
                  another's file
    ContentTooLarge  AttachmentTooLarge (cloud.tickets.rules.files)
    Conflict      OrderStateConflict, IdempotencyConflict, ChargeSettled,
                  ChargeNotSettled (cloud.billing.errors), NoInvoice
                  (cloud.billing.invoices), CommandsUnavailable (cloud.health.commands),
                  RmaRefused (cloud.tickets.rules, with a machine-readable ``why``),
                  ResetLinkInvalid (cloud.accounts.resets) a used, replaced or expired link
                  RepairOpen (cloud.repairs.service) a device has one open repair at a time
    InvalidRequest
    ├── UnsupportedAttachment (cloud.tickets.rules.files) not an accepted file type
    ├── TooManyAttachments   (cloud.tickets.rules.files) more files than a message carries
    └── BadOrderRequest      (cloud.billing.errors) an order that can never be valid
        ├── PartialVoid
        └── RefundTooLarge
    CloudError    MailRejected (cloud.notifications.mailer) the mail server refused for good
    TransportError
    └── PaymentProviderError (cloud.billing.errors) the provider did not do it
        ├── UnknownCharge
        ├── VoidFailed
        └── RefundFailed

:mod:`cloud.billing.errors` is the billing branch. An error defined anywhere
else in ``cloud`` belongs in this list.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from protocol.errors import EntitleError

__all__ = [
    "Msg",
    "N_",
    "AccountExists",
    "AccountRefused",
    "BrokerUnavailable",
    "Blacklisted",
    "LoginFailed",
    "LoginThrottled",
    "SessionExpired",
    "UnknownCompany",
    "UnknownUser",
    "BadTerm",
    "InvalidRequest",
    "PaymentDeclined",
    "UpstreamFailed",
    "InvalidTransition",
    "SubscriptionConflict",
    "SubscriptionExists",
    "UnknownProduct",
    "UnknownSubscription",
    "CloudError",
    "Conflict",
    "ContentTooLarge",
    "DeviceExists",
    "InsecureKeyFile",
    "InstallationFull",
    "InvalidApiKey",
    "InvalidGrant",
    "Forbidden",
    "KeyFileError",
    "MissingApiKey",
    "NotAuthenticated",
    "NotFound",
    "RevokedApiKey",
    "UnknownApiKey",
    "UnknownDevice",
    "UnknownGrant",
    "UnknownInstallation",
]


class Msg(str):
    """A message marked for translation where it is made (:func:`N_`): English as it is,
    translated by the dashboard in the reader's language (``CloudError.text``)."""

    __slots__ = ()


def N_(message: str) -> Msg:  # noqa: N802 (gettext's own name for a deferred message)
    """Mark ``message`` for translation without translating it here (Babel extracts
    ``N_``): the services know no reader's language; the dashboard translates."""
    return Msg(message)


class CloudError(EntitleError):
    """Root of the cloud's own errors.

    ``CloudError(N_("order %(number)s is settled: refund it"), number=n)``: ``str()`` is
    the English text (the API's ``detail``); :meth:`text` is the same in another language
    (the dashboard's pages). A parameter that is itself a :class:`Msg` is translated too.
    """

    def __init__(self, message: str = "", /, **params: Any) -> None:
        super().__init__(message % params if params else message)
        self.message = message
        self.params = params

    def text(self, gettext: Callable[[str], str]) -> str:
        """The message in the language ``gettext`` translates to (English without one)."""
        if not self.params:
            return gettext(self.message) if self.message else str(self)
        values = {k: gettext(v) if isinstance(v, Msg) else v for k, v in self.params.items()}
        return gettext(self.message) % values


class NotFound(CloudError):
    """The named object does not exist."""


class UnknownInstallation(NotFound):
    """No installation with this id."""


class UnknownDevice(NotFound):
    """No device with this id."""


class UnknownGrant(NotFound):
    """No active grant of this feature in the installation."""


class UnknownApiKey(NotFound):
    """No API key with this id."""


class Conflict(CloudError):
    """The request contradicts what is stored."""


class InstallationFull(Conflict):
    """An installation already has the maximum number of controllers."""


class DeviceExists(Conflict):
    """A device with this id is already registered."""


class AccountRefused(Conflict):
    """The broker accounts adapter refused the device's login (e.g. a reserved name)."""


class InvalidGrant(CloudError):
    """A grant that cannot be put into a token (reserved names, too many features)."""


class InvalidRequest(CloudError):
    """Input the rules refuse; nothing was changed (422)."""


class UnknownProduct(InvalidRequest):
    """A product code that is not in the catalogue."""


class BadTerm(InvalidRequest):
    """A term the product does not offer, a renewal over 60 months, or a past date."""


class SubscriptionConflict(Conflict):
    """The subscription's current state does not allow the request."""


class SubscriptionExists(SubscriptionConflict):
    """The installation already has a live subscription to this service."""


class InvalidTransition(Conflict):
    """A change the object's state does not accept: an event a subscription's status
    refuses (reactivating an expired one), a stage a ticket cannot move to (it is closed)."""


class ContentTooLarge(CloudError):
    """An upload over its size limit; nothing of it was kept."""


class PaymentDeclined(CloudError):
    """A purchase or renewal whose card charge failed: nothing was bought (402)."""


class UpstreamFailed(CloudError):
    """A service the cloud relies on (the payment provider) failed at the request (502)."""


class UnknownSubscription(NotFound):
    """No subscription with this id."""


class NotAuthenticated(CloudError):
    """A request to a protected route without a usable API key."""


class MissingApiKey(NotAuthenticated):
    """No ``Authorization: Bearer`` header."""


class InvalidApiKey(NotAuthenticated):
    """A key that no stored key matches."""


class RevokedApiKey(NotAuthenticated):
    """A key that was valid but has been revoked."""


class Forbidden(CloudError):
    """Authenticated, but the role or the scope does not allow this action (403)."""


class Blacklisted(Forbidden):
    """A blacklisted customer (user or company) may look but not buy or change (403)."""


class UnknownUser(NotFound):
    """No user with this id (or e-mail)."""


class UnknownCompany(NotFound):
    """No partner company with this id."""


class AccountExists(Conflict):
    """A user with this e-mail, or a company with this partner id, exists already."""


class LoginFailed(NotAuthenticated):
    """Wrong e-mail or password (which one is not said), or a disabled user."""


class SessionExpired(NotAuthenticated):
    """A login session cookie that is unknown, expired or idle too long."""


class LoginThrottled(CloudError):
    """Too many failed logins for one account: wait ``retry_after`` seconds (429)."""

    def __init__(self, message: str, /, *, retry_after: int, **params: Any) -> None:
        super().__init__(message, retry_after=retry_after, **params)
        self.retry_after = retry_after


class BrokerUnavailable(CloudError):
    """The broker could not create or remove a device login; nothing changed (503)."""


class KeyFileError(CloudError):
    """An issuer key file is missing, corrupt or does not match the key set."""


class InsecureKeyFile(KeyFileError):
    """A private key file whose permissions let others read it."""
