"""A robot account pushes with skopeo where it was granted ``write``, and nowhere else."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from sqlalchemy import select

from portside.db.engine import Database, create_db_engine
from portside.db.models import AccessToken, Namespace, Repository, RepositoryPermission, User
from portside.services.repositories import create_organization
from portside.services.users import token_digest
from support.clients import Skopeo
from support.e2e import Registry, need_layout

pytestmark = pytest.mark.e2e

ORG = "robotorg"


def setup_org_and_token(registry: Registry) -> str:
    """Create the organization (administered by the test user) in the server's database,
    and return an API access token of the user with ``org:admin``."""
    token = secrets.token_urlsafe(30)
    db = Database(create_db_engine(registry.server.config["DB_URI"]))
    try:
        with db.session() as session:
            user_id = session.scalar(select(User.id).where(User.username == registry.user))
            create_organization(session, ORG, user_id)
            session.add(AccessToken(user_id=user_id, token_hash=token_digest(token),
                                    scopes="org:admin repo:read"))
    finally:
        db.dispose()
    return token


def grant_write(registry: Registry, robot: str, repository: str) -> None:
    """Give ``robot`` write on ``ORG/<repository>`` directly in the database."""
    db = Database(create_db_engine(registry.server.config["DB_URI"]))
    try:
        with db.session() as session:
            robot_id = session.scalar(select(User.id).where(User.username == robot))
            repo_id = session.scalar(
                select(Repository.id).join(Namespace, Namespace.id == Repository.namespace_id)
                .where(Namespace.name == ORG, Repository.name == repository))
            assert robot_id is not None and repo_id is not None
            session.add(RepositoryPermission(repository_id=repo_id, user_id=robot_id,
                                             role="write"))
    finally:
        db.dispose()


def test_robot_pushes_to_granted_repository_only(registry: Registry, skopeo: Skopeo,
                                                 tmp_path: Path) -> None:
    layout, tag = need_layout("debian-minbase")
    skopeo.logs.append(registry.server.log_path)
    api_token = setup_org_and_token(registry)
    # The organization's administrator creates both repositories.
    for name in ("allowed", "other"):
        skopeo.copy(f"oci:{layout}:{tag}", registry.ref(f"{ORG}/{name}", "v1"),
                    dest_creds=registry.creds)

    with registry.http(auth=False) as http:
        created = http.put(f"/api/v1/organization/{ORG}/robots/deployer",
                           headers={"Authorization": f"Bearer {api_token}"})
    assert created.status_code == 201, created.text
    robot, token = created.json()["name"], created.json()["token"]
    assert robot == f"{ORG}+deployer"
    grant_write(registry, robot, "allowed")
    creds = f"{robot}:{token}"

    digestfile = tmp_path / "pushed.digest"
    skopeo.copy(f"oci:{layout}:{tag}", registry.ref(f"{ORG}/allowed", "robot"),
                dest_creds=creds, digestfile=digestfile)
    assert skopeo.list_tags(f"docker://{registry.host}/{ORG}/allowed", creds=creds) == [
        "robot", "v1"]

    refused = skopeo.run("copy", "--dest-tls-verify=false", "--dest-creds", creds,
                         f"oci:{layout}:{tag}", registry.ref(f"{ORG}/other", "robot"),
                         check=False)
    assert refused.returncode != 0
    stderr = refused.stderr.lower()
    assert any(word in stderr for word in ("denied", "forbidden", "unauthorized",
                                           "authentication required")), stderr
    assert skopeo.list_tags(f"docker://{registry.host}/{ORG}/other",
                            creds=registry.creds) == ["v1"]
