"""Device logins in a Mosquitto-style ``$7$`` password file (the embedded broker's).

Rewritten atomically (write-temp-then-rename, mode 0600) under a thread lock and a
file lock: the cloud and ``entitle broker run --embedded-broker`` may share the
directory. The hash format is :func:`common.credentials.mosquitto_hash`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path

from common.credentials import mosquitto_hash
from protocol.topics import check_device_id

__all__ = ["PASSWD_NAME", "PasswdFileAccounts", "read_passwd", "write_passwd", "write_private"]

PASSWD_NAME = "passwd"


def read_passwd(path: Path) -> dict[str, str]:
    """username -> stored hash; a missing file is no logins."""
    entries: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            user, sep, hashed = line.partition(":")
            if sep and not line.startswith("#"):
                entries[user] = hashed
    return entries


def write_private(path: Path, text: str) -> None:
    """Write-temp-then-rename with mode 0600: a crash leaves the old file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_passwd(path: Path, entries: Mapping[str, str]) -> None:
    write_private(path, "".join(f"{user}:{hashed}\n" for user, hashed in sorted(entries.items())))


class PasswdFileAccounts:
    """Device logins in a ``$7$`` password file, for the embedded amqtt broker (which
    re-reads the file when it changes). Mosquitto's logins are
    :class:`common.dynsec.DynsecAccounts`.

    Rewrites the file atomically under a thread lock and a file lock (the cloud and
    ``entitle broker run --embedded-broker`` may share the directory).
    """

    def __init__(
        self, directory: Path | str, *, protected_usernames: Collection[str] = ("cloud",)
    ) -> None:
        self.directory = Path(directory)
        self.protected = frozenset(protected_usernames)
        self._lock = threading.Lock()

    def set_password(self, username: str, password: str) -> None:
        """Create or change a device login (a device may not take a protected name)."""
        check_device_id(username)
        if username in self.protected:
            raise ValueError(f"{username!r} is reserved for the cloud; pick another device id")
        self._update(username, mosquitto_hash(password))

    def remove(self, username: str) -> None:
        """Delete a device login (unknown: no-op); an open connection stays until it ends."""
        if username in self.protected:
            raise ValueError(f"{username!r} is reserved for the cloud")
        self._update(username, None)

    def _update(self, username: str, hashed: str | None) -> None:
        path = self.directory / PASSWD_NAME
        with self._lock, _file_lock(self.directory / f".{PASSWD_NAME}.lock"):
            entries = read_passwd(path)
            if hashed is None:
                if entries.pop(username, None) is None:
                    return
            else:
                entries[username] = hashed
            write_passwd(path, entries)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
