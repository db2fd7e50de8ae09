"""Package list: the `verisolve` package lives in shared/, its migrations in migrations/."""

from setuptools import find_packages, setup

setup(
    packages=[
        *find_packages("shared", include=["verisolve", "verisolve.*"]),
        "verisolve_migrations",
        "verisolve_migrations.versions",
    ]
)
