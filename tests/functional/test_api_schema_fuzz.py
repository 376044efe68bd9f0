"""Schema-driven fuzzing of the whole ``/api/v1``: no operation ever answers 5xx.

Schemathesis reads the OpenAPI document the server itself serves at
``/api/v1/discovery`` and, for every operation in it, sends generated requests (valid
and deliberately invalid path parameters, queries and bodies, plus schemathesis'
boundary cases) twice over: without credentials and with the bearer token of a superuser
holding every scope. Each response must be below 500, every error must be a JSON object
in Quay's error shape, and the server must not have logged a traceback. Nothing is
asserted about which 4xx a request gets: other tests pin those down.

The superuser may delete anything, so the fuzzing runs against a server of its own,
seeded with an organization, a team, robots, a plain user and repositories holding an
image. Path parameters and body fields often name those objects (or valid enum values,
fresh valid names, odd strings such as NUL), so that requests get past validation and
404s; whatever an operation deleted or renamed is put back before the next one.
``FUZZ_EXAMPLES`` sets the random examples per operation (default 5) for longer runs.

Schemathesis' own pytest integration (``schemathesis.pytest.from_fixture``) does not run
under pytest 9.2 (it reads a node attribute that pytest renamed), so the test builds and
runs each operation's Hypothesis test the way that plugin would.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation.feedback import FeedbackSources
from schemathesis.pytest._test_builder import build_operation_test
from schemathesis.python._constants.orchestrator import make_constants_value_source
from sqlalchemy import select

from functional.client import RegistryClient
from portside.db.engine import Database, create_db_engine
from portside.db.models import AccessToken, User
from portside.services.users import ALL_API_SCOPES, UserError, UserService, token_digest
from support.server import RunningRegistry, postgres_database, running_registry

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "5"))

FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)

SUPERUSER = "fuzzroot"
PASSWORD = "fuzzroot-secret-pw"
PLAIN_USER = "fuzzuser"
ORG = "fuzzorg"
TEAM = "fuzzteam"
ROBOT = "fuzzbot"
REPO = f"{SUPERUSER}/fuzzrepo"
ORG_REPO = f"{ORG}/fuzzrepo"
TAG = "latest"
#: Valid names of objects that do not exist yet (so that creations can succeed).
FRESH_NAMES = st.from_regex(r"[a-z][a-z0-9]{1,10}", fullmatch=True)
#: Strings that databases, paths and parsers treat specially (NUL: PostgreSQL refuses it).
ODD_TEXT = st.sampled_from(
    [
        "fuzz\x00org",
        "\x00",
        " ",
        "..",
        "a/b",
        "%2F",
        "\u00e9t\u00e9",
        "x" * 300,
        "-1",
        "9" * 30,
        "null",
    ]
)


@dataclass
class FuzzTarget:
    """The dedicated server, the superuser's all-scopes token and the seeded objects."""

    registry: RunningRegistry
    token: str = ""
    digest: str = ""
    known: dict[str, list[str]] = field(default_factory=dict)
    known_fields: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return self.registry.url

    def log_size(self) -> int:
        """Current length of the server log."""
        path = self.registry.log_path
        return path.stat().st_size if path.exists() else 0

    def crashes_since(self, offset: int) -> str:
        """Tracebacks logged after byte ``offset`` ("" if none)."""
        with self.registry.log_path.open("rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
        return text if "Traceback" in text or "unhandled error" in text else ""

    def _database(self) -> Database:
        return Database(create_db_engine(self.registry.config["DB_URI"]))

    def _new_superuser_token(self) -> str:
        """A superuser with an all-scopes token, straight in the database. The first one
        comes from the first-user bootstrap; if the fuzzing deleted or disabled it, a new
        superuser stands in."""
        db = self._database()
        try:
            users = UserService(db, [])
            if users.count() == 0:
                _, token = users.initialize(SUPERUSER, PASSWORD, None, with_token=True)
                assert token is not None
                return token
            name = f"fuzzroot-{uuid.uuid4().hex[:8]}"
            users.create_user(name, PASSWORD, superuser=True)
            token = secrets.token_urlsafe(30)
            with db.session() as session:
                user_id = session.scalar(select(User.id).where(User.username == name))
                session.add(
                    AccessToken(
                        user_id=user_id, token_hash=token_digest(token), scopes=ALL_API_SCOPES
                    )
                )
            return token
        finally:
            db.dispose()

    def _ensure_plain_user(self) -> None:
        db = self._database()
        try:
            with contextlib.suppress(UserError):
                UserService(db, []).create_user(PLAIN_USER, f"{PLAIN_USER}-secret-pw")
        finally:
            db.dispose()

    def seed(self) -> list[httpx.Response]:
        """Create whatever of the seeded objects is missing (existing ones only get a
        4xx, which is ignored); returns the API's answers."""
        with httpx.Client(base_url=f"{self.url}/api/v1", timeout=30) as api:
            if not self.token or api.get("/user/", headers=self._auth).status_code != 200:
                self.token = self._new_superuser_token()
            self._ensure_plain_user()
            api.headers.update(self._auth)
            answers = [
                # A fresh e-mail: a renamed copy of the organization may still hold the old.
                api.post(
                    "/organization/",
                    json={"name": ORG, "email": f"fuzz-{uuid.uuid4().hex[:8]}@example.com"},
                ),
                api.put(f"/organization/{ORG}/team/{TEAM}", json={"role": "member"}),
                api.put(f"/organization/{ORG}/robots/{ROBOT}", json={}),
                api.put(f"/user/robots/{ROBOT}", json={}),
            ]
            for repo in (REPO, ORG_REPO):
                namespace, name = repo.split("/")
                answers.append(
                    api.post(
                        "/repository",
                        json={
                            "namespace": namespace,
                            "repository": name,
                            "visibility": "private",
                            "description": "",
                        },
                    )
                )
        self._push_image()
        self.known = {
            "org": [ORG, SUPERUSER],
            "orgname": [ORG, SUPERUSER],
            "name": [ORG],
            "team": [TEAM, "owners"],
            "teamname": [TEAM, "owners"],
            "membername": [PLAIN_USER, f"{ORG}+{ROBOT}"],
            "username": [PLAIN_USER, f"{ORG}+{ROBOT}"],
            "shortname": [ROBOT],
            "repository": [REPO, ORG_REPO],
            "tag": [TAG],
            "digest": [self.digest] if self.digest else [],
        }
        # Body fields: names of seeded objects and the values that enum-like strings
        # accept, so that bodies pass validation often enough to reach the services.
        self.known_fields = {
            "namespace": [SUPERUSER, ORG],
            "repository": ["fuzzrepo", REPO],
            "name": [ORG, "fuzzapp"],
            "username": [PLAIN_USER],
            "role": ["read", "write", "admin", "member", "creator"],
            "visibility": ["public", "private"],
            "manifest_digest": self.known["digest"],
            "delegate": [{"kind": "user", "name": PLAIN_USER}, {"kind": "team", "name": TEAM}],
            "media_type": ["text/plain", "application/json"],
        }
        return answers

    @property
    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def _push_image(self) -> None:
        """Tag an image ``latest`` in both repositories, unless it is there already."""
        client = RegistryClient(self.url, "$oauthtoken", self.token)
        try:
            for repo in (REPO, ORG_REPO):
                headers = client.auth_headers(repo)
                if (
                    client.http.head(f"/v2/{repo}/manifests/{TAG}", headers=headers).status_code
                    == 200
                ):
                    continue
                with contextlib.suppress(AssertionError, httpx.HTTPError):
                    self.digest = client.push_image(repo, TAG).digest
        finally:
            client.close()


@pytest.fixture(scope="module")
def fuzz_target(
    backend: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[FuzzTarget]:
    """A server of the fuzzer's own on ``backend``, seeded; stopped afterwards."""
    root: Path = tmp_path_factory.mktemp(f"{backend}-schema-fuzz")
    with contextlib.ExitStack() as stack:
        db_uri = stack.enter_context(postgres_database()) if backend == "postgres" else None
        registry = stack.enter_context(
            running_registry(
                root, db_uri=db_uri, LOGIN_FAILURE_LIMIT=0, FEATURE_USER_INITIALIZE=True
            )
        )
        target = FuzzTarget(registry)
        for answer in target.seed():
            assert answer.status_code < 300, (answer.request.url, answer.text)
        assert target.digest, "could not push the seed image"
        yield target


@pytest.fixture(scope="module")
def api_schema(fuzz_target: FuzzTarget) -> schemathesis.BaseSchema:
    """The OpenAPI document the server serves, path parameters biased to seeded names."""
    schema = schemathesis.openapi.from_url(f"{fuzz_target.url}/api/v1/discovery")

    @schema.hook
    def flatmap_path_parameters(_context: Any, path_parameters: Any) -> st.SearchStrategy:
        return _biased(path_parameters, fuzz_target.known)

    @schema.hook
    def flatmap_body(_context: Any, body: Any) -> st.SearchStrategy:
        return _biased(body, {**fuzz_target.known, **fuzz_target.known_fields})

    return schema


def _biased(values: Any, known: dict[str, list[Any]]) -> st.SearchStrategy:
    """``values`` (a dict of generated values), each value replaced three times out of
    four by a seeded name or valid enum value, a new valid name or an odd string."""
    if not isinstance(values, dict):
        return st.just(values)
    choices = {
        name: st.one_of(st.just(value), st.sampled_from(known[name]), FRESH_NAMES, ODD_TEXT)
        for name, value in values.items()
        if known.get(name)
    }
    if not choices:
        return st.just(values)
    return st.fixed_dictionaries(choices).map(lambda chosen: {**values, **chosen})


def quay_error_shape(_ctx: Any, response: schemathesis.Response, _case: schemathesis.Case) -> None:
    """Every error response is a JSON object in Quay's error shape."""
    if response.status_code < 400:
        return
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type.startswith("application/json"), (
        f"error {response.status_code} is {content_type!r}, not JSON: {response.text[:300]!r}"
    )
    body = json.loads(response.text)
    assert isinstance(body, dict) and {"error_message", "error_type"} <= body.keys(), (
        f"error {response.status_code} is not in Quay's shape: {response.text[:300]!r}"
    )


def fuzz_operation(
    target: FuzzTarget,
    operation: schemathesis.APIOperation,
    session: requests.Session,
    headers: dict[str, str] | None,
    statuses: Counter[int],
) -> None:
    """Send ``operation`` schemathesis' boundary cases (missing, empty, wrong-typed and
    out-of-range values) and ``FUZZ_EXAMPLES`` random valid and invalid requests; raise
    on the first (shrunk) response that is 5xx or a non-JSON error, or if the server
    logged a traceback meanwhile."""

    def exercise(case: schemathesis.Case) -> None:
        response = case.call(session=session, headers=headers, timeout=30)
        statuses[response.status_code] += 1
        case.validate_response(
            response, checks=[not_a_server_error, quay_error_shape], headers=headers
        )

    # What schemathesis' pytest plugin builds for each operation (examples, coverage and
    # fuzzing phases), run by hand.
    test = build_operation_test(
        config=operation.schema.config,
        operation=operation,
        test_func=exercise,
        given_kwargs={},
        explicit_settings=FUZZ_SETTINGS,
        feedback=FeedbackSources(
            constants_value_source=make_constants_value_source(operation.schema)
        ),
    )
    offset = target.log_size()
    test()
    # Checked once per operation (a 5xx already fails the request that caused it).
    crashes = target.crashes_since(offset)
    assert not crashes, f"the server logged:\n{crashes}"


def fuzz_every_operation(
    target: FuzzTarget, schema: schemathesis.BaseSchema, as_superuser: bool
) -> None:
    """Fuzz every operation of ``schema``; fail listing every operation that failed."""
    failures: list[str] = []
    operations = 0
    statuses: Counter[int] = Counter()
    seconds: dict[str, float] = {}
    with requests.Session() as session:
        for result in schema.get_all_operations():
            operation = result.ok()
            operations += 1
            headers = {"Authorization": f"Bearer {target.token}"} if as_superuser else None
            started = time.monotonic()
            try:
                fuzz_operation(target, operation, session, headers, statuses)
            except (Exception, BaseExceptionGroup) as exc:
                failures.append(f"== {operation.label}\n{exc}")
            if as_superuser and operation.method.upper() != "GET":
                target.seed()  # put back what the operation deleted or renamed
            seconds[operation.label] = time.monotonic() - started
    slowest = sorted(seconds.items(), key=lambda item: -item[1])[:5]
    print(
        f"schema fuzz: {operations} operations, {statuses.total()} requests "
        f"({dict(sorted(statuses.items()))}), {len(failures)} failing operations; slowest: "
        + ", ".join(f"{label} {duration:.1f}s" for label, duration in slowest)
    )
    assert operations > 0, "the API description lists no operation"
    assert not failures, "\n\n".join(failures)


def test_api_without_credentials(
    fuzz_target: FuzzTarget, api_schema: schemathesis.BaseSchema
) -> None:
    fuzz_every_operation(fuzz_target, api_schema, as_superuser=False)


def test_api_as_superuser(
    fuzz_target: FuzzTarget,
    api_schema: schemathesis.BaseSchema,
) -> None:
    fuzz_every_operation(fuzz_target, api_schema, as_superuser=True)


def test_path_with_a_newline_gets_a_json_404(fuzz_target: FuzzTarget) -> None:
    # A decoded "\n" keeps the path from matching the /api/v1 mount at all: the outer
    # router answers, and must still answer in Quay's error shape (found by the fuzzing).
    response = httpx.get(f"{fuzz_target.url}/api/v1/organization/a%0Ab/members")
    assert response.status_code == 404
    assert response.json()["error_type"] == "not_found"
    assert httpx.get(f"{fuzz_target.url}/nothing%0Ahere").status_code == 404
