"""Encryption of database secrets (robot tokens) and the generated secret file."""

from __future__ import annotations

import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from portside.auth.secrets import (
    SECRET_FILE_NAME,
    SecretBox,
    SecretError,
    load_or_create_secret,
    secret_box_for,
    secret_file_path,
)


def test_round_trip_and_ciphertext_hides_the_plaintext() -> None:
    box = SecretBox("a8c2744b-7004-4af2-bcee-e417e7bdd235")
    ciphertext = box.encrypt("ROBOTTOKEN123")
    assert "ROBOTTOKEN123" not in ciphertext
    assert box.decrypt(ciphertext) == "ROBOTTOKEN123"
    # Fernet is randomised: the same plaintext never gives the same ciphertext.
    assert box.encrypt("ROBOTTOKEN123") != ciphertext
    # The same secret derives the same key (another process, another node).
    assert SecretBox("a8c2744b-7004-4af2-bcee-e417e7bdd235").decrypt(ciphertext) == (
        "ROBOTTOKEN123")


def test_wrong_key_fails_cleanly() -> None:
    ciphertext = SecretBox("one secret").encrypt("token")
    with pytest.raises(SecretError, match="cannot decrypt"):
        SecretBox("another secret").decrypt(ciphertext)


@pytest.mark.parametrize("garbage", ["", "not-fernet", "gAAAAA" + "x" * 80, "\u00e9t\u00e9"])
def test_corrupted_ciphertext_fails_cleanly(garbage: str) -> None:
    with pytest.raises(SecretError):
        SecretBox("secret").decrypt(garbage)


def test_tampered_ciphertext_is_refused() -> None:
    box = SecretBox("secret")
    ciphertext = box.encrypt("token")
    tampered = ciphertext[:-5] + ("A" if ciphertext[-5] != "A" else "B") + ciphertext[-4:]
    with pytest.raises(SecretError):
        box.decrypt(tampered)


def test_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError):
        SecretBox("")


def test_secret_file_location() -> None:
    assert secret_file_path("sqlite:///data/portside.db") == Path("data") / SECRET_FILE_NAME
    assert secret_file_path("sqlite:////var/lib/p/p.db?mode=rwc") == Path(
        "/var/lib/p") / SECRET_FILE_NAME
    assert secret_file_path("sqlite:///:memory:") == Path("data") / SECRET_FILE_NAME
    assert secret_file_path("postgresql://u:p@h/db") == Path("data") / SECRET_FILE_NAME


def test_generated_secret_is_private_stable_and_shared(tmp_path: Path) -> None:
    path = tmp_path / "sub" / SECRET_FILE_NAME
    # Worker processes starting together all end up with the same secret.
    with ThreadPoolExecutor(8) as pool:
        secrets = set(pool.map(lambda _: load_or_create_secret(path), range(16)))
    assert len(secrets) == 1
    assert len(secrets.pop()) >= 48
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == [SECRET_FILE_NAME]  # no temp files


def test_box_from_file_decrypts_after_restart(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'portside.db'}"
    ciphertext = secret_box_for(None, uri).encrypt("token")
    assert (tmp_path / SECRET_FILE_NAME).exists()
    assert secret_box_for(None, uri).decrypt(ciphertext) == "token"
    # A configured DATABASE_SECRET_KEY takes precedence (and so cannot read it).
    with pytest.raises(SecretError):
        secret_box_for("configured", uri).decrypt(ciphertext)


def test_empty_secret_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / SECRET_FILE_NAME
    path.write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        load_or_create_secret(path)
