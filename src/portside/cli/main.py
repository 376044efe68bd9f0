"""``portside``: serve, validate configuration, manage users and the database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import typer

from portside.config import CONFIG_ENV_VAR, ConfigError, PortsideConfig, load_config, validate_file

app = typer.Typer(help="Portside container registry.", no_args_is_help=True,
                  add_completion=False)
config_app = typer.Typer(help="Check configuration files.", no_args_is_help=True)
user_app = typer.Typer(help="Manage users.", no_args_is_help=True)
db_app = typer.Typer(help="Manage the database schema.", no_args_is_help=True)
gc_app = typer.Typer(help="Garbage collection.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(user_app, name="user")
app.add_typer(db_app, name="db")
app.add_typer(gc_app, name="gc")

#: Exit status of ``db upgrade --check-online`` when a check failed (not the migration).
ONLINE_CHECK_FAILED = 3
#: Where ``portside install`` puts a registry unless told otherwise.
DEFAULT_INSTALL_ROOT = (Path("/var/lib/portside") if os.geteuid() == 0
                        else Path.home() / "portside-registry")
ConfigOption = typer.Option(None, "--config", "-c",
                            help=f"config.yaml to use (default: ${CONFIG_ENV_VAR}, else built-in).")


def _load(config_path: Path | None) -> PortsideConfig:
    """Load the config or exit with one line per problem."""
    if config_path is not None:
        os.environ[CONFIG_ENV_VAR] = str(config_path.resolve())
    try:
        config, warnings = load_config()
    except ConfigError as exc:
        for problem in exc.problems:
            typer.echo(f"config error: {problem}", err=True)
        raise typer.Exit(2) from None
    for warning in warnings:
        typer.echo(f"config warning: {warning}", err=True)
    return config


@app.command()
def serve(
    config_path: Path | None = ConfigOption,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8080, "--port", help="Port to listen on."),
    workers: int | None = typer.Option(None, "--workers",
                                       help="HTTP worker processes (default SERVER_WORKERS)."),
    ssl_cert: Path | None = typer.Option(
        None, "--ssl-cert", help="PEM certificate to serve HTTPS with (SSL_CERTIFICATE_PATH)."),
    ssl_key: Path | None = typer.Option(
        None, "--ssl-key", help="PEM private key of --ssl-cert (SSL_PRIVATE_KEY_PATH)."),
) -> None:
    """Start the registry (migrating the database first)."""
    config = _load(config_path)
    cert, key = tls_files(config, ssl_cert, ssl_key)
    # Migrate in a short-lived child process: the server's main process then never
    # loads the application (SQLAlchemy, drivers, ...), and the workers it forks stay
    # small. The config path travels in the environment.
    # The same child then checks that every storage location (and SMTP) answers.
    migration = subprocess.run([sys.executable, "-m", "portside", "db", "upgrade",
                                "--check-online"], check=False, capture_output=True, text=True)
    if migration.returncode == ONLINE_CHECK_FAILED:
        _report_unreachable(migration.stdout, ignore=os.environ.get(
            "IGNORE_VALIDATION", "").lower() in ("1", "true", "yes"))
    elif migration.returncode != 0:
        errors = [line for line in migration.stderr.splitlines() if line.startswith("error:")]
        sys.stderr.write("\n".join(errors or migration.stderr.splitlines()[-20:]) + "\n")
        typer.echo("error: database migration failed", err=True)
        raise typer.Exit(migration.returncode)
    from portside.server import serve as run_server

    scheme = "https" if cert is not None else "http"
    typer.echo(f"Portside listening on {scheme}://{host}:{port}", err=True)
    run_server(host, port, workers or config.SERVER_WORKERS, ssl_cert=cert, ssl_key=key)


def _report_unreachable(output: str, ignore: bool) -> None:
    """Refuse to start when a storage location or SMTP is unreachable
    (``IGNORE_VALIDATION=true``: start anyway, with warnings)."""
    for line in output.splitlines():
        if line.startswith("error:"):
            typer.echo(("warning: " + line.removeprefix("error: ")) if ignore else line,
                       err=True)
    if not ignore:
        typer.echo("error: the configuration names something unreachable; fix it or set "
                   "IGNORE_VALIDATION=true to start anyway", err=True)
        raise typer.Exit(2)


def tls_files(config: PortsideConfig, cert: Path | None,
              key: Path | None) -> tuple[Path | None, Path | None]:
    """The certificate and key to serve with (flags win over the config), checked to be
    readable; exits with a clear message otherwise."""
    if cert is None and key is None and config.SSL_CERTIFICATE_PATH:
        cert, key = Path(config.SSL_CERTIFICATE_PATH), Path(config.SSL_PRIVATE_KEY_PATH)
    if (cert is None) != (key is None):
        typer.echo("error: --ssl-cert and --ssl-key must be given together", err=True)
        raise typer.Exit(2)
    for label, path in (("certificate", cert), ("private key", key)):
        if path is not None and not os.access(path, os.R_OK):
            typer.echo(f"error: TLS {label} {path} is missing or unreadable", err=True)
            raise typer.Exit(2)
    return cert, key


@config_app.command("validate")
def config_validate(
    path: Path | None = typer.Argument(
        None, help="The config.yaml to check (default: --config or $PORTSIDE_CONFIG)."),
    online: bool = typer.Option(False, "--online",
                                help="Also connect to the database, storage and SMTP."),
    config_path: Path | None = ConfigOption,
) -> None:
    """Check a configuration file; with --online, also what it points at."""
    path = path or config_path or (Path(os.environ[CONFIG_ENV_VAR])
                                   if os.environ.get(CONFIG_ENV_VAR) else None)
    if path is None:
        typer.echo("error: name the config file (argument, --config or $PORTSIDE_CONFIG)",
                   err=True)
        raise typer.Exit(2)
    problems, warnings = validate_file(path)
    for warning in warnings:
        typer.echo(f"warning: {warning}")
    for problem in problems:
        typer.echo(f"error: {problem}")
    if problems:
        raise typer.Exit(1)
    if online:
        config = _load(path)
        from portside.services.config_checks import run_online_checks

        failed = False
        for result in run_online_checks(config):
            if result.problem is None:
                typer.echo(f"ok: {result.name}")
            else:
                failed = True
                typer.echo(f"error: {result.name}: {result.problem}")
        if failed:
            raise typer.Exit(1)
    typer.echo(f"{path}: configuration is valid" + (" and reachable" if online else ""))


#: Keys whose values ``config print`` never shows.
_SECRET_KEYS = frozenset({"DATABASE_SECRET_KEY", "MAIL_PASSWORD", "SECRET_KEY"})
_SECRET_SUFFIXES = ("PASSWORD", "SECRET", "SECRET_KEY", "ACCESS_KEY", "CREDENTIALS")
_MASK = "********"


def _masked(value: object, key: str = "") -> object:
    """``value`` with secrets replaced: secret keys, nested password/secret fields and
    the password in ``DB_URI``."""
    if isinstance(value, dict):
        return {k: _masked(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v, key) for v in value]
    if value in (None, "") or isinstance(value, bool):
        return value
    if key in _SECRET_KEYS or key.upper().endswith(_SECRET_SUFFIXES):
        return _MASK
    if key == "DB_URI" and isinstance(value, str):
        import re

        return re.sub(r"(://[^:/@]*:)[^@]*@", rf"\g<1>{_MASK}@", value)
    return value


@config_app.command("print")
def config_print(config_path: Path | None = ConfigOption) -> None:
    """Print the effective configuration (defaults included) as YAML, secrets masked."""
    import yaml

    config = _load(config_path)
    typer.echo(yaml.safe_dump(_masked(config.model_dump(mode="json")), sort_keys=True),
               nl=False)


@config_app.command("schema")
def config_schema() -> None:
    """Print the JSON Schema of the configuration file."""
    import json

    typer.echo(json.dumps(PortsideConfig.model_json_schema(), indent=2, sort_keys=True))


@user_app.command("create")
def user_create(
    username: str = typer.Argument(..., help="The new user's name (also its namespace)."),
    superuser: bool = typer.Option(False, "--superuser", help="Make the user a superuser."),
    email: str | None = typer.Option(None, "--email", help="E-mail address."),
    password_stdin: bool = typer.Option(False, "--password-stdin",
                                        help="Read the password from standard input."),
    config_path: Path | None = ConfigOption,
) -> None:
    """Create a user. The password is read from standard input, never from arguments."""
    if not password_stdin:
        typer.echo("error: pass --password-stdin and write the password to standard input",
                   err=True)
        raise typer.Exit(2)
    password = sys.stdin.readline().rstrip("\r\n")
    config = _load(config_path)
    from portside.app import build_services
    from portside.services.users import UserError

    services = build_services(config, migrate=True)
    try:
        services.registry.users.create_user(username, password, email=email,
                                            superuser=superuser)
    except UserError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        services.close()
    typer.echo(f"created user {username}" + (" (superuser)" if superuser else ""))


@app.command()
def install(
    hostname: str | None = typer.Option(None, "--hostname",
                                        help="Name clients use (default: this host's FQDN)."),
    port: int | None = typer.Option(None, "--port", help="HTTPS port (default 8443)."),
    root: Path = typer.Option(DEFAULT_INSTALL_ROOT, "--root",
                              help="Directory for config, data, keys and logs."),
    init_user: str | None = typer.Option(None, "--init-user",
                                         help="Initial superuser (default: init)."),
    init_password: str | None = typer.Option(
        None, "--init-password", help="Its password (default: generated and printed)."),
    ssl_cert: Path | None = typer.Option(None, "--ssl-cert",
                                         help="Your certificate (default: a private CA)."),
    ssl_key: Path | None = typer.Option(None, "--ssl-key", help="Its private key."),
) -> None:
    """Install (or upgrade in place) a self-contained registry on this host and start it."""
    from portside.install.installer import InstallError, InstallOptions
    from portside.install.installer import install as run_install

    options = InstallOptions(root=root, hostname=hostname, port=port, init_user=init_user,
                             init_password=init_password, ssl_cert=ssl_cert, ssl_key=ssl_key)
    try:
        result = run_install(options, progress=lambda line: typer.echo(line, err=True))
    except InstallError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"Portside is {'upgraded' if result.upgraded else 'installed'} and running "
               f"({result.service}).")
    typer.echo(f"URL:      {result.url}")
    typer.echo(f"User:     {result.username}")
    typer.echo("Password: " + (result.password if result.password is not None
                               else "(unchanged)"))
    if result.ca_certificate is not None:
        typer.echo(f"CA:       {result.ca_certificate}")
        typer.echo(f"Trust it: podman login --cert-dir <dir holding a copy named ca.crt> "
                   f"{result.url.removeprefix('https://')}")


@app.command()
def uninstall(
    root: Path = typer.Option(DEFAULT_INSTALL_ROOT, "--root", help="The installation root."),
    yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation."),
) -> None:
    """Stop an installed registry and delete its root directory, data included."""
    from portside.install.installer import InstallError
    from portside.install.installer import uninstall as run_uninstall

    if not yes and not typer.confirm(f"Remove the registry in {root} and all its data?"):
        raise typer.Exit(1)
    try:
        run_uninstall(root, progress=lambda line: typer.echo(line, err=True))
    except InstallError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"Removed the registry in {root}.")


@app.command()
def backup(
    output: Path = typer.Option(..., "--output", "-o", help="The archive to write (.tar)."),
    config_path: Path | None = ConfigOption,
) -> None:
    """Write a consistent archive of the database, config, keys and local blobs while the
    registry keeps serving."""
    config = _load(config_path)
    from portside.backup.archive import create_backup
    from portside.backup.database import BackupError

    source = os.environ.get(CONFIG_ENV_VAR)
    try:
        summary = create_backup(config, Path(source) if source else None, output,
                                progress=lambda line: typer.echo(line, err=True))
    except BackupError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"wrote {summary.path}: {summary.database} database, {summary.blobs} "
               f"stored objects ({summary.bytes} bytes)")
    for location in summary.skipped_locations:
        typer.echo(f"note: storage location {location} is object storage and is not in "
                   "the archive; back it up with the storage's own tools", err=True)


@app.command()
def restore(
    archive: Path = typer.Argument(..., help="An archive written by portside backup."),
    root: Path = typer.Option(..., "--root", help="A new or empty directory."),
    db_uri: str | None = typer.Option(
        None, "--db-uri", help="PostgreSQL backups: the empty database to restore into "
        "(default: the one backed up)."),
) -> None:
    """Restore a backup onto a fresh root; prints how to start the restored registry."""
    from portside.backup.database import BackupError
    from portside.backup.restore import restore_backup

    try:
        summary = restore_backup(archive, root, db_uri,
                                 progress=lambda line: typer.echo(line, err=True))
    except BackupError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"restored into {root}; start it with: "
               f"portside serve --config {summary.config_path}")
    for location in summary.skipped_locations:
        typer.echo(f"note: storage location {location} still points at its object "
                   "storage; restore that separately", err=True)


@db_app.command("upgrade")
def db_upgrade(
    config_path: Path | None = ConfigOption,
    check_online: bool = typer.Option(False, "--check-online", hidden=True,
                                      help="Then run the online checks (used by serve)."),
) -> None:
    """Create or migrate the database schema to the latest version."""
    config = _load(config_path)
    from sqlalchemy.exc import OperationalError

    from portside.db.engine import create_db_engine
    from portside.db.migrate import upgrade

    engine = create_db_engine(config.DB_URI, config.DB_CONNECTION_ARGS)
    try:
        upgrade(engine)
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        typer.echo(f"error: cannot reach the database: {reason}", err=True)
        raise typer.Exit(1) from None
    finally:
        engine.dispose()
    typer.echo("database schema is up to date")
    if check_online:
        from portside.services.config_checks import run_online_checks

        problems = [r for r in run_online_checks(config) if r.problem is not None]
        for result in problems:
            typer.echo(f"error: {result.name}: {result.problem}")
        if problems:
            raise typer.Exit(ONLINE_CHECK_FAILED)


@gc_app.command("run")
def gc_run(
    config_path: Path | None = ConfigOption,
    dry_run: bool = typer.Option(False, "--dry-run", help="Count what would go; change nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Run one garbage-collection pass now (safe while the registry serves)."""
    import json

    config = _load(config_path)
    from portside.app import build_services
    from portside.services.gc import garbage_collector_for

    services = build_services(config, migrate=True)
    try:
        report = garbage_collector_for(services).run(dry_run=dry_run)
    finally:
        services.close()
    if as_json:
        typer.echo(json.dumps({**report.counters(), "skipped": report.skipped,
                               "error": report.error}))
    else:
        typer.echo(report.summary())
    if report.error or report.skipped:
        raise typer.Exit(1)


def main() -> None:
    """Console-script entry point."""
    app()
