"""Encryption of secrets kept in the database (robot tokens), as Quay does with
``DATABASE_SECRET_KEY``.

The Fernet key (AES-128-CBC + HMAC-SHA256) is derived with HKDF-SHA256 from a secret:
``DATABASE_SECRET_KEY`` when configured, otherwise a random secret generated once and
kept in a file (``database_secret.key``, mode 0600) next to the SQLite database, or under
``./data`` for PostgreSQL. Deriving rather than using the configured value directly lets
any string (Quay writes UUIDs there) serve as the secret, and gives this purpose its own
key should the same secret ever be used for something else.
"""

from __future__ import annotations

import base64
import logging
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

log = logging.getLogger(__name__)

#: Name of the file holding the generated secret when DATABASE_SECRET_KEY is not set.
SECRET_FILE_NAME = "database_secret.key"
#: Fixed HKDF inputs: changing either makes every stored secret unreadable.
_HKDF_SALT = b"portside-database-secret"
_HKDF_INFO = b"portside robot tokens v1"


class SecretError(ValueError):
    """A stored secret cannot be decrypted (wrong key, or corrupted value)."""


class SecretBox:
    """Encrypts and decrypts short strings with a key derived from a secret."""

    def __init__(self, secret: str) -> None:
        if not secret:
            raise ValueError("the database secret key must not be empty")
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=_HKDF_SALT,
                       info=_HKDF_INFO).derive(secret.encode())
        self._fernet = Fernet(base64.urlsafe_b64encode(derived))

    def encrypt(self, plaintext: str) -> str:
        """The encrypted, authenticated form of ``plaintext`` (ASCII, for a Text column)."""
        return self._fernet.encrypt(plaintext.encode()).decode("ascii")

    def decrypt(self, ciphertext: str) -> str:
        """The plaintext of ``ciphertext``; raises :class:`SecretError` if it was made
        with another key or altered (never returns garbage)."""
        try:
            return self._fernet.decrypt(ciphertext.encode("ascii")).decode()
        except (InvalidToken, UnicodeError, ValueError) as exc:
            raise SecretError("cannot decrypt the stored secret (wrong key?)") from exc


def secret_file_path(db_uri: str) -> Path:
    """Where the generated secret lives: next to a SQLite database file, else under
    ``./data`` (relative to the working directory)."""
    if db_uri.startswith("sqlite:///"):
        database_file = db_uri[len("sqlite:///"):].split("?", 1)[0]
        if database_file and database_file != ":memory:":
            return Path(database_file).parent / SECRET_FILE_NAME
    return Path("data") / SECRET_FILE_NAME


def load_or_create_secret(path: Path) -> str:
    """The secret stored at ``path``, generating it (mode 0600) on first use.

    Several worker processes may start at once: the secret is written to a private
    temporary file and hard-linked into place, which fails if another process won the
    race, so every process ends up reading the same complete file.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "w") as handle:
                handle.write(secrets.token_urlsafe(48) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(temporary, path)
                log.warning("DATABASE_SECRET_KEY is not set: generated a database secret "
                            "in %s; back it up with the database", path)
            except FileExistsError:
                pass  # another process created it first: use theirs
        finally:
            temporary.unlink(missing_ok=True)
    secret = path.read_text().strip()
    if not secret:
        raise ValueError(f"the database secret file {path} is empty")
    return secret


def secret_box_for(database_secret_key: str | None, db_uri: str) -> SecretBox:
    """The box for the configuration: ``DATABASE_SECRET_KEY`` if set, else the file."""
    if database_secret_key:
        return SecretBox(database_secret_key)
    if not db_uri.startswith("sqlite:"):
        # Each node would generate its own file: robot tokens created on one node
        # would not work on another.
        log.warning("DATABASE_SECRET_KEY is not set: using %s; set the same "
                    "DATABASE_SECRET_KEY on every node sharing this database",
                    secret_file_path(db_uri))
    return SecretBox(load_or_create_secret(secret_file_path(db_uri)))
