"""Encrypted passwords for CLI logins (Quay's ``POST /api/v1/user/clientkey``).

A client key is the user's password encrypted (and authenticated) with the registry's
:class:`~portside.auth.secrets.SecretBox`: only this registry (or another node with the
same ``DATABASE_SECRET_KEY``) can read it, so a leaked ``~/.docker/config.json`` does not
reveal the password itself. The plaintext names its purpose and the user it was made
for, so neither a robot token's ciphertext nor another user's key passes as one. A key
stays valid as long as the password it contains does: changing the password revokes
every key made from the old one.
"""

from __future__ import annotations

from portside.auth.secrets import SecretBox, SecretError

__all__ = ["CLIENT_KEY_PREFIX", "decrypt_client_key", "encrypt_client_key", "looks_like_client_key"]

#: Marks a client key; a Fernet token never starts with it, so keys are told apart
#: from passwords without trying to decrypt every password.
CLIENT_KEY_PREFIX = "psck1."
#: Inside the ciphertext: purpose and version, then the user name and the password.
_PLAINTEXT_TAG = "portside client key v1"
#: Longest accepted key (a password of up to 1 KiB fits easily); anything longer is
#: refused before decryption.
_MAX_KEY_LENGTH = 4096


def encrypt_client_key(box: SecretBox, username: str, password: str) -> str:
    """The client key for ``username``'s ``password``."""
    return CLIENT_KEY_PREFIX + box.encrypt(f"{_PLAINTEXT_TAG}\0{username}\0{password}")


def looks_like_client_key(value: str) -> bool:
    """Whether ``value`` has the shape of a client key (it may still be invalid)."""
    return value.startswith(CLIENT_KEY_PREFIX)


def decrypt_client_key(box: SecretBox, username: str, key: str) -> str | None:
    """The password inside ``key`` if it is a genuine key made for ``username``;
    ``None`` for anything else (altered, another registry's, another user's)."""
    if not looks_like_client_key(key) or len(key) > _MAX_KEY_LENGTH:
        return None
    try:
        plaintext = box.decrypt(key[len(CLIENT_KEY_PREFIX):])
    except SecretError:
        return None
    tag, sep, rest = plaintext.partition("\0")
    owner, sep2, password = rest.partition("\0")
    if tag != _PLAINTEXT_TAG or not sep or not sep2 or owner != username:
        return None
    return password
