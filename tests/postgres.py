"""A real PostgreSQL for the tests: ``$FOURFOLD_TEST_POSTGRES``, else the machine's server on
127.0.0.1:5432 (database ``test``), else a private cluster (``initdb`` + ``pg_ctl``) on a free port in a
temporary directory, stopped when the test session ends. ``./dev test`` installs PostgreSQL's server
binaries where they are missing, so no test is ever skipped for want of a database."""

from __future__ import annotations

import atexit
import functools
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from typing import Any

import pyarrow as pa

from serving import free_port

MACHINE = "postgresql://postgres@127.0.0.1:5432/test"


def _answers(url: str) -> bool:
    import adbc_driver_manager
    import adbc_driver_postgresql.dbapi as dbapi

    try:
        with dbapi.connect(url) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
            cur.fetchall()
        return True
    except adbc_driver_manager.Error:
        return False


def _binary(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))[::-1]), None
    )
    if found is None:
        raise RuntimeError(
            f"PostgreSQL's {name} is not installed (./dev test installs it: apt-get install postgresql)"
        )
    return found


@functools.cache
def url() -> str:
    given = os.environ.get("FOURFOLD_TEST_POSTGRES")
    if given:
        return given
    with socket.socket() as s:
        s.settimeout(0.5)
        listening = s.connect_ex(("127.0.0.1", 5432)) == 0
    if listening and _answers(MACHINE):
        return MACHINE
    return _private_cluster()


def _private_cluster() -> str:
    root = tempfile.mkdtemp(prefix="ff-pg-")
    data, port = os.path.join(root, "data"), free_port()
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    run = functools.partial(subprocess.run, check=True, capture_output=True, timeout=120)
    run([*as_user, _binary("initdb"), "-D", data, "-U", "postgres", "--auth=trust", "--no-sync"])
    opts = f"-p {port} -c listen_addresses=127.0.0.1 -k {root} -c fsync=off"
    run([*as_user, _binary("pg_ctl"), "-D", data, "-o", opts, "-w", "-l", os.path.join(root, "log"), "start"])
    stop = [*as_user, _binary("pg_ctl"), "-D", data, "-m", "immediate", "stop"]
    atexit.register(lambda: subprocess.run(stop, capture_output=True, check=False))
    atexit.register(shutil.rmtree, root, True)
    run([*as_user, _binary("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "test"])
    return f"postgresql://postgres@127.0.0.1:{port}/test"


class PG:
    """An autocommit connection to the test database and the tables a test made (dropped afterwards)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.tables: list[str] = []

    def table(self) -> str:
        name = f"ff_test_{uuid.uuid4().hex[:10]}"
        self.tables.append(name)
        return name

    def sql(self, query: str, params: tuple[Any, ...] | None = None) -> list[tuple[Any, ...]]:
        with self.conn.cursor() as cur:
            cur.execute(query, params)
            return list(cur.fetchall()) if cur.description else []

    def load(self, name: str, data: pa.Table) -> None:
        with self.conn.cursor() as cur:
            cur.adbc_ingest(name, data, mode="create")

    def read(self, name: str) -> pa.Table:
        with self.conn.cursor() as cur:
            cur.execute(f'SELECT * FROM "{name}" ORDER BY date, user_id')
            table: pa.Table = cur.fetch_arrow_table()
        return table

    def drop_all(self) -> None:
        for name in self.tables:
            self.sql(f'DROP TABLE IF EXISTS "{name}"')
        self.conn.close()
