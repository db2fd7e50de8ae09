"""`verisolve db`: apply and inspect the schema migrations."""

from __future__ import annotations

import typer
from rich.console import Console

from verisolve.db import get_engine, migrate
from verisolve.settings import get_settings

app = typer.Typer(
    help="Database schema: apply and inspect the Alembic migrations.", no_args_is_help=True
)
console = Console()

UrlOption = typer.Option(None, "--url", help="Database URL (default: VERISOLVE_DATABASE_URL).")


@app.command()
def upgrade(url: str | None = UrlOption, revision: str = "head") -> None:
    """Apply the migrations up to REVISION (default: the newest)."""
    target = url or get_settings().database_url
    migrate.upgrade(target, revision)
    console.print(f"database at revision [bold]{migrate.current_revision(get_engine(target))}[/]")


@app.command()
def current(url: str | None = UrlOption) -> None:
    """Print the revision the database is at, and the newest one the code knows."""
    engine = get_engine(url or get_settings().database_url)
    console.print(f"database: {migrate.current_revision(engine) or '(empty)'}")
    console.print(f"code:     {migrate.head_revision()}")


@app.command()
def downgrade(revision: str, url: str | None = UrlOption) -> None:
    """Revert the migrations down to REVISION ('base' empties the database)."""
    target = url or get_settings().database_url
    migrate.downgrade(target, revision)
    console.print(
        f"database at revision {migrate.current_revision(get_engine(target)) or '(empty)'}"
    )
