"""Packages: `verisolve` in shared/, the services in services/, migrations in migrations/."""

from setuptools import find_packages, setup

setup(
    packages=[
        *find_packages("shared", include=["verisolve", "verisolve.*"]),
        *find_packages(".", include=["services", "services.*"]),
        "verisolve_migrations",
        "verisolve_migrations.versions",
    ]
)
