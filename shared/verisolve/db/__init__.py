"""Database access: declarative base, engines, the session scope, migrations."""

from verisolve.db.base import Base
from verisolve.db.engine import create_engine, get_engine, normalize_url, session_scope

__all__ = ["Base", "create_engine", "get_engine", "normalize_url", "session_scope"]
