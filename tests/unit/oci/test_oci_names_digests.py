"""Repository name, tag and digest grammar."""

from __future__ import annotations

import pytest

from portside.oci.digest import InvalidDigest, digest_of, parse_digest
from portside.oci.names import InvalidName, is_valid_tag, validate_repository_name


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("alice/app", ("alice", "app")),
        ("alice/team/app", ("alice", "team/app")),
        ("a-b.c/x__y/z-1", ("a-b.c", "x__y/z-1")),
    ],
)
def test_valid_names_split_into_namespace_and_repository(name: str,
                                                         expected: tuple[str, str]) -> None:
    assert validate_repository_name(name) == expected


@pytest.mark.parametrize(
    "name",
    ["alice", "Alice/app", "alice//app", "alice/../app", "alice/app/", "/alice/app",
     "alice/-app", "alice/app_", "alice/a___b", "a/" + "x" * 300, "alice/ap p"],
)
def test_invalid_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidName):
        validate_repository_name(name)


@pytest.mark.parametrize("tag", ["latest", "v1.2.3", "_x", "A" * 128])
def test_valid_tags(tag: str) -> None:
    assert is_valid_tag(tag)


@pytest.mark.parametrize("tag", ["", ".hidden", "-x", "A" * 129, "a/b", "a:b"])
def test_invalid_tags(tag: str) -> None:
    assert not is_valid_tag(tag)


def test_digest_round_trip() -> None:
    digest = digest_of(b"hello")
    assert parse_digest(digest) == ("sha256", digest.split(":")[1])
    assert parse_digest(digest_of(b"x", "sha512"))[0] == "sha512"


@pytest.mark.parametrize(
    "value",
    ["sha256:abc", "sha256:" + "A" * 64, "md5:" + "a" * 32, "sha256", "sha256:" + "g" * 64,
     "sha256:../../etc/passwd"],
)
def test_bad_digests(value: str) -> None:
    with pytest.raises(InvalidDigest):
        parse_digest(value)
