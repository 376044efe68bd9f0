"""Tests for the pure path helpers of :mod:`portside.storage.layout`."""

from __future__ import annotations

import pytest

from portside.storage import layout
from portside.storage.layout import blob_path

SHA256_HEX = "ab" + "0123456789abcdef" * 3 + "0123456789abcd"
SHA512_HEX = "cd" + "0123456789abcdef" * 7 + "0123456789abcd"


def test_blob_path_sha256() -> None:
    assert len(SHA256_HEX) == 64
    assert blob_path(f"sha256:{SHA256_HEX}") == f"sha256/ab/{SHA256_HEX}"


def test_blob_path_sha512() -> None:
    assert len(SHA512_HEX) == 128
    assert blob_path(f"sha512:{SHA512_HEX}") == f"sha512/cd/{SHA512_HEX}"


@pytest.mark.parametrize(
    "digest",
    [
        "",
        "sha256",
        f"sha256{SHA256_HEX}",  # no colon
        f"sha256:{SHA256_HEX[:-1]}",  # too short
        f"sha256:{SHA256_HEX}0",  # too long
        f"sha256:{SHA256_HEX.upper()}",  # hex must be lowercase
        f"sha256:{SHA256_HEX[:-1]}g",  # not hex
        f"sha512:{SHA256_HEX}",  # wrong length for the algorithm
        f"md5:{SHA256_HEX}",  # well-formed, but not an algorithm we store
        f"SHA256:{SHA256_HEX}",  # the algorithm is lowercase
        f"sha256:../{SHA256_HEX[3:]}",
        f"sha256:ab/{SHA256_HEX[3:]}",
        f"../sha256:{SHA256_HEX}",
        f"sha256:{SHA256_HEX}\n",
        f" sha256:{SHA256_HEX}",
    ],
)
def test_blob_path_rejects(digest: str) -> None:
    with pytest.raises(ValueError):
        blob_path(digest)


def test_blob_path_rejects_non_strings() -> None:
    with pytest.raises(ValueError):
        blob_path(None)  # type: ignore[arg-type]


def test_digest_grammar() -> None:
    assert layout.DIGEST_RE.fullmatch("sha256+b64u:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564")
    assert not layout.DIGEST_RE.fullmatch("sha256:")
    assert not layout.DIGEST_RE.fullmatch("sha256+:abc")


@pytest.mark.parametrize("upload_id", ["0b6c1a0e-5f3e-4c8a-9d1b-3f2e1a0b9c8d", "abc", "A-1"])
def test_upload_dir(upload_id: str) -> None:
    assert layout.upload_dir(upload_id) == f"uploads/{upload_id}"


@pytest.mark.parametrize("upload_id", ["", ".", "..", "a/b", "a_b", "a.b", "x" * 65, "é", "abc\n"])
def test_upload_dir_rejects(upload_id: str) -> None:
    with pytest.raises(ValueError):
        layout.upload_dir(upload_id)


@pytest.mark.parametrize("path", ["a", "a/b", "sha256/ab/abc", "uploads/x/data", "a/.hidden"])
def test_check_path_accepts(path: str) -> None:
    assert layout.check_path(path) == path


@pytest.mark.parametrize(
    "path", ["", "/a", "a/", "a//b", ".", "..", "a/../b", "./a", "a\\b", "a\x00b"]
)
def test_check_path_rejects(path: str) -> None:
    with pytest.raises(ValueError):
        layout.check_path(path)


@pytest.mark.parametrize("prefix", ["", "a", "a/", "sha256/a", "uploads/"])
def test_check_prefix_accepts(prefix: str) -> None:
    assert layout.check_prefix(prefix) == prefix


@pytest.mark.parametrize("prefix", ["/", "/a", "../", "a//", "a/../"])
def test_check_prefix_rejects(prefix: str) -> None:
    with pytest.raises(ValueError):
        layout.check_prefix(prefix)
