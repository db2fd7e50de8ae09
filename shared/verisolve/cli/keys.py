"""`verisolve keys`: API keys of the submission service, one tenant each."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from verisolve.apikeys import ApiKeyError, create_key, list_keys, revoke_key
from verisolve.cli.database import require_schema
from verisolve.cli.line_errors import err_console, fail
from verisolve.db import get_engine, session_scope

app = typer.Typer(help="API keys of the submission service.", no_args_is_help=True)
console = Console()


@app.command()
def create(
    tenant: Annotated[str, typer.Option("--tenant", help="The tenant the key acts for.")],
    name: Annotated[str, typer.Option("--name", help="A note to tell keys apart.")] = "",
) -> None:
    """Create a key and print it: it is shown this once, and only its digest is stored."""
    engine = get_engine()
    require_schema(engine)
    try:
        with session_scope(engine) as session:
            issued = create_key(session, tenant, name)
            key_id, key_tenant = issued.key.id, issued.key.tenant
    except ApiKeyError as exc:
        fail(str(exc))
        raise typer.Exit(1) from None
    err_console.print(f"API key {key_id} for tenant {key_tenant!r} (shown once; keep it):")
    typer.echo(issued.token)


@app.command("list")
def list_(
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant's.")] = None,
) -> None:
    """List the keys (never the keys themselves: their first characters)."""
    engine = get_engine()
    require_schema(engine)
    with session_scope(engine) as session:
        keys = list_keys(session, tenant)
        table = Table("id", "tenant", "name", "key", "created", "revoked")
        for key in keys:
            table.add_row(
                str(key.id),
                key.tenant,
                key.name,
                key.prefix + "…",
                f"{key.created_at:%Y-%m-%d %H:%M}",
                f"{key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "",
            )
    console.print(table)


@app.command()
def revoke(key_id: Annotated[int, typer.Argument(help="The key's id (see `keys list`).")]) -> None:
    """Revoke a key: requests with it get 401 from now on."""
    engine = get_engine()
    require_schema(engine)
    try:
        with session_scope(engine) as session:
            key = revoke_key(session, key_id)
            tenant = key.tenant
    except ApiKeyError as exc:
        fail(str(exc))
        raise typer.Exit(1) from None
    console.print(f"API key {key_id} of tenant {tenant!r} revoked")
