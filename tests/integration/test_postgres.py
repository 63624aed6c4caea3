"""Storage on a real PostgreSQL server (Debian's, started by the test on loopback): migrations up and down, the
case workflow, and concurrent decision writers losing nothing."""

from __future__ import annotations

import concurrent.futures as cf
import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator

import pytest
from conftest import free_port
from sqlalchemy import inspect

from copilot.errors import Conflict
from copilot.schema import Action, Case, DecisionCreate
from copilot.store import audit
from copilot.store import cases as repo
from copilot.store.db import Database, make_engine, migrate

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else None


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
    if not initdb or not pg_ctl:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed; .ci/run installs it (scripts/system-deps.sh)")
        pytest.skip("PostgreSQL server binaries not installed (apt-get install postgresql)")
    pytest.importorskip("psycopg")
    root = tempfile.mkdtemp(prefix="copilot-pg-")
    os.chmod(root, 0o777)
    data = os.path.join(root, "data")
    # PostgreSQL refuses to run as root: run it as the postgres user when we are root.
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(root, "postgres")
    port = free_port()
    subprocess.run([*as_user, initdb, "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8"], check=True, capture_output=True)
    subprocess.run([*as_user, pg_ctl, "-D", data, "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "-l", os.path.join(root, "log"), "-w", "start"],
                   check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", data, "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def test_migrations_up_down_up(pg_url: str) -> None:
    migrate(pg_url)
    assert {"cases", "suggestions", "decisions", "claims", "audit_log", "api_keys", "eval_runs"} <= set(inspect(make_engine(pg_url)).get_table_names())
    migrate(pg_url, "base", downgrade=True)
    assert set(inspect(make_engine(pg_url)).get_table_names()) <= {"alembic_version"}
    migrate(pg_url)


def test_workflow_and_concurrent_writers(pg_url: str) -> None:
    db = Database.open(pg_url)
    with db.session() as s:
        ids = [repo.ingest(s, Case(caption=f"pg case {i}", external_id=f"pg-{i}"), "t")[0].id for i in range(50)]

    def decide(cid: int) -> None:
        with db.session() as s:
            repo.decide(s, cid, "mod", DecisionCreate(labels=["spam"], action=Action.remove, note=f"n{cid}"))

    with cf.ThreadPoolExecutor(16) as pool:
        list(pool.map(decide, ids))  # any exception (a forked audit chain, a lost write) fails the test
    with db.session() as s:
        for cid in ids:
            ds = repo.decisions(s, cid)
            assert len(ds) == 1 and ds[0].note == f"n{cid}"
        ok, n, problem = audit.verify(s)
        assert ok, problem
        assert n == 100
    with pytest.raises(Conflict), db.session() as s:  # and a second decision by the same moderator is refused
        repo.decide(s, ids[0], "mod", DecisionCreate(labels=[], action=Action.no_action))
