"""Permission checks and ``/v2/auth`` token issuance at scale.

Seeds a database with 1,000 organizations, 10,000 repositories (10 per organization),
100 teams (in the first 100 organizations, with repository permissions on all of that
organization's repositories) and 200 users spread over the teams, then measures:

1. in-process permission decisions per second: the repository lookup that every
   registry request makes (namespace, team roles, repository roles) plus
   ``allowed_actions``, for random (user, repository) pairs;
2. ``GET /v2/auth`` token issuance per second against a running ``portside serve``
   with wrk at 32 connections, each request asking for push+pull on a random one of
   the user's team repositories (Basic credentials; the login cache is warm).

Usage::

    .venv/bin/python benchmarks/permissions_and_tokens.py [--quick] [--keep]

Everything runs on 127.0.0.1 and is bounded in time.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from sqlalchemy import insert

from portside.auth.passwords import hash_password
from portside.auth.permissions import Policy, Subject, allowed_actions
from portside.db.engine import Database, create_db_engine
from portside.db.migrate import upgrade
from portside.db.models import Namespace, Repository, RepositoryPermission, Team, TeamMember, User
from portside.services.repositories import RepositoryService

ORGS, REPOS_PER_ORG, TEAMS, USERS = 1_000, 10, 100, 200
PASSWORD = "bench-password-1"


def seed(db: Database) -> list[tuple[str, int, list[str]]]:
    """Fill the database; return ``(username, user_id, readable repositories)``."""
    password_hash = hash_password(PASSWORD)  # one hash for all: seeding stays fast
    with db.engine.begin() as conn:
        conn.execute(insert(Namespace), [
            {"id": i + 1, "name": f"org{i:04d}", "kind": "organization"} for i in range(ORGS)
        ])
        conn.execute(insert(Namespace), [
            {"id": ORGS + u + 1, "name": f"user{u:03d}", "kind": "user"} for u in range(USERS)
        ])
        conn.execute(insert(User), [
            {"id": u + 1, "namespace_id": ORGS + u + 1, "username": f"user{u:03d}",
             "password_hash": password_hash} for u in range(USERS)
        ])
        conn.execute(insert(Repository), [
            {"id": o * REPOS_PER_ORG + r + 1, "namespace_id": o + 1, "name": f"app{r}",
             "public": False}
            for o in range(ORGS) for r in range(REPOS_PER_ORG)
        ])
        conn.execute(insert(Team), [
            {"id": t + 1, "namespace_id": t + 1, "name": "devs",
             "role": ("member", "creator", "admin")[t % 3]} for t in range(TEAMS)
        ])
        conn.execute(insert(RepositoryPermission), [
            {"repository_id": t * REPOS_PER_ORG + r + 1, "team_id": t + 1,
             "role": ("read", "write")[r % 2]}
            for t in range(TEAMS) for r in range(REPOS_PER_ORG)
        ])
        conn.execute(insert(TeamMember), [
            {"team_id": (u * 7 + k) % TEAMS + 1, "user_id": u + 1}
            for u in range(USERS) for k in range(3)
        ])
    users = []
    for u in range(USERS):
        teams = {(u * 7 + k) % TEAMS for k in range(3)}
        readable = [f"org{t:04d}/app{r}" for t in sorted(teams) for r in range(REPOS_PER_ORG)]
        users.append((f"user{u:03d}", u + 1, readable))
    return users


def decisions_per_second(db: Database, users: list[tuple[str, int, list[str]]],
                         seconds: float) -> tuple[float, int]:
    """Lookups + decisions per second for random users and random repositories."""
    service = RepositoryService(db, create_private_on_push=True)
    policy = Policy()
    rng = random.Random(1)  # the same pairs in every run
    done = granted = 0
    deadline = time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < deadline:
        for _ in range(200):
            name, user_id, readable = rng.choice(users)
            if rng.random() < 0.5:
                org, repo = rng.choice(readable).split("/")
            else:
                org, repo = f"org{rng.randrange(ORGS):04d}", f"app{rng.randrange(10)}"
            lookup = service.lookup(org, repo, user_id)
            if allowed_actions(Subject(user_id=user_id, username=name), lookup.facts, policy):
                granted += 1
            done += 1
    return done / (time.perf_counter() - start), granted


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def token_load(root: Path, db_uri: str, users: list[tuple[str, int, list[str]]],
               seconds: int) -> dict[str, str]:
    """Run wrk against /v2/auth on a server over the seeded database."""
    port = free_port()
    config = root / "config.yaml"
    config.write_text(
        f"SERVER_HOSTNAME: '127.0.0.1:{port}'\nDB_URI: '{db_uri}'\n"
        f"DISTRIBUTED_STORAGE_CONFIG:\n  default: [LocalStorage, {{storage_path: '{root}/s'}}]\n"
        "LOGIN_FAILURE_LIMIT: 0\n"
    )
    log = (root / "server.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "portside", "serve", "--config", str(config), "--port",
         str(port)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
            except urllib.error.HTTPError:
                break
            except OSError:
                time.sleep(0.2)
        requests = []
        for name, _uid, readable in users[:50]:
            credentials = base64.b64encode(f"{name}:{PASSWORD}".encode()).decode()
            for repo in readable[:4]:
                scope = f"repository:{repo}:pull,push"
                requests.append((credentials, f"/v2/auth?service=bench&scope={scope}"))
        # Warm the login cache so the figure is token issuance, not Argon2.
        for credentials, path in requests[::4]:
            req = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                         headers={"Authorization": f"Basic {credentials}"})
            urllib.request.urlopen(req, timeout=30).read()
        lua = root / "tokens.lua"
        lua.write_text(
            "local reqs = {" + ",".join(
                "{" + json.dumps(c) + "," + json.dumps(p) + "}" for c, p in requests) + "}\n"
            "local i = 0\n"
            "request = function()\n"
            "  i = i % #reqs + 1\n"
            "  local r = reqs[i]\n"
            "  return wrk.format('GET', r[2], {['Authorization'] = 'Basic ' .. r[1]})\n"
            "end\n"
        )
        out = subprocess.run(
            ["wrk", "-t2", "-c32", f"-d{seconds}s", "--latency", "-s", str(lua),
             f"http://127.0.0.1:{port}/v2/auth"],
            capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
        figures = {}
        for line in out.splitlines():
            parts = line.split()
            if line.strip().startswith("Requests/sec:"):
                figures["tokens_per_s"] = parts[1]
            elif parts[:1] == ["99%"]:
                figures["p99"] = parts[1]
            elif "Non-2xx" in line:
                figures["non_2xx"] = parts[-1]
        return figures
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()


def main() -> None:
    """Seed, measure, print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter measurements")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="portside-perm-bench-"))
    try:
        db_uri = f"sqlite:///{root / 'bench.db'}"
        db = Database(create_db_engine(db_uri))
        upgrade(db.engine)
        started = time.perf_counter()
        users = seed(db)
        seeded = time.perf_counter() - started
        rate, granted = decisions_per_second(db, users, 3 if args.quick else 10)
        db.dispose()
        tokens = token_load(root, db_uri, users, 3 if args.quick else 10)
        print("| metric | value |\n| --- | ---: |")
        print(f"| seeded: organizations / repositories / teams / users | "
              f"{ORGS:,} / {ORGS * REPOS_PER_ORG:,} / {TEAMS} / {USERS} ({seeded:.1f} s) |")
        print(f"| permission decisions per second (lookup + decision, 1 thread, SQLite) | "
              f"{rate:,.0f} |")
        print(f"| decisions that granted something | {granted:,} |")
        print(f"| /v2/auth tokens per second (wrk, 32 connections, 1 worker) | "
              f"{tokens.get('tokens_per_s', '?')} |")
        print(f"| /v2/auth p99 latency | {tokens.get('p99', '?')} |")
        print(f"| /v2/auth non-2xx responses | {tokens.get('non_2xx', '0')} |")
    finally:
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
