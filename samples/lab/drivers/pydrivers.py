"""Run one REAL Python client driver once: connect, log in, ``SELECT 1``, close.

Usage: ``python pydrivers.py DRIVER JSON`` where JSON holds host, port, user, password,
database, encrypt (off | on | strict), readonly, timeout, cafile. Prints ONE JSON line with the
client's own view of the result; that line is part of the lab's ground truth, so it reports the
driver's exception text as-is.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from typing import Any


def run_pytds(a: dict[str, Any]) -> list[Any]:
    import pytds

    kw: dict[str, Any] = dict(
        server=a["host"],
        port=a["port"],
        user=a["user"],
        password=a["password"],
        database=a["database"],
        login_timeout=a["timeout"],
        timeout=a["timeout"],
        autocommit=True,
        appname="tdslens-lab",
        readonly=a.get("readonly", False),
    )
    if a["encrypt"] != "off":
        kw.update(cafile=a["cafile"], validate_host=False)
    elif a.get("login_only"):
        # PRELOGIN ENCRYPT_OFF: TLS for LOGIN7 only, the rest of the session in clear
        kw.update(cafile=a["cafile"], validate_host=False, enc_login_only=True)
    with pytds.connect(**kw) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1")
        return [list(r) for r in cur.fetchall()]


def run_pymssql(a: dict[str, Any]) -> list[Any]:
    import pymssql

    conn = pymssql.connect(
        server=a["host"],
        port=str(a["port"]),
        user=a["user"],
        password=a["password"],
        database=a["database"],
        login_timeout=a["timeout"],
        timeout=a["timeout"],
        appname="tdslens-lab",
        tds_version=a.get("tds_version") or "7.4",
        autocommit=True,
        # FreeTDS "request" sends ENCRYPT_OFF: login-only encryption if the server agrees
        encryption="request"
        if a.get("login_only")
        else {"off": "off", "on": "require", "strict": "strict"}[a["encrypt"]],
        read_only=a.get("readonly", False),
    )
    try:
        cur = conn.cursor()
        cur.execute("SELECT 1")
        return [list(r) for r in cur.fetchall()]
    finally:
        conn.close()


def run_mssql_python(a: dict[str, Any]) -> list[Any]:
    import mssql_python

    # Encrypt=no already sends ENCRYPT_OFF (login-only encryption when the server agrees)
    enc = {"off": "no", "on": "yes", "strict": "strict"}[a["encrypt"]]
    parts = [
        f"Server=tcp:{a['host']},{a['port']}",
        f"Database={a['database']}",
        f"UID={a['user']}",
        f"PWD={a['password']}",
        f"Encrypt={enc}",
        "TrustServerCertificate=yes",
        "ConnectRetryCount=1",
    ]
    if a.get("readonly"):
        parts.append("ApplicationIntent=ReadOnly")
    conn = mssql_python.connect(";".join(parts) + ";", timeout=a["timeout"])
    try:
        cur = conn.cursor()
        cur.execute("SELECT 1")
        return [list(r) for r in cur.fetchall()]
    finally:
        conn.close()


def version(driver: str) -> str:
    from importlib import metadata

    dist = {"pytds": "python-tds", "pymssql": "pymssql"}.get(driver, "mssql-python")
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


RUNNERS = {
    "pytds": run_pytds,
    "pymssql": run_pymssql,
    "mssql-python": run_mssql_python,  # MSSQL_PYTHON_NATIVE_PROVIDER picks odbc18 or the Rust one
}


def main() -> int:
    driver, args = sys.argv[1], json.loads(sys.argv[2])
    started = time.time()
    result: dict[str, Any] = {"driver": driver, "version": version(driver)}
    try:
        result["rows"] = RUNNERS[driver](args)
        result["ok"] = result["rows"] == [[1]]
    except Exception as exc:  # the driver's own failure is the data we want
        result["ok"] = False
        result["error"] = f"{type(exc).__name__}: {exc}"[:600]
        result["traceback_tail"] = traceback.format_exc().splitlines()[-3:]
    result["elapsed"] = round(time.time() - started, 3)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
