"""Regenerate the lab's captures: every scenario x every driver that can take part.

    sudo python3 -m samples.lab.run                       # everything, into samples/lab/out/runs
    sudo python3 -m samples.lab.run -s redirect_ok -d tedious
    sudo python3 -m samples.lab.run --publish              # then copy into samples/pcaps
    sudo python3 -m samples.lab.run -s redirect_cleartext --publish   # publish only that scenario

Each run gets fresh namespaces, a fresh simulator and its own tcpdump; the expected file is
written from the simulator's event log, the firewall's sets and the client's own report, never
from an analysis of the capture.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import netlab
from .certs import make_cert
from .expected import build_expected
from .scenarios import (
    BY_DRIVER,
    BY_SCENARIO,
    CERT_NAMES,
    DNS_CONFIG,
    DRIVERS,
    SCENARIOS,
    Driver,
    Scenario,
    takes_part,
)

LAB = Path(__file__).resolve().parent
REPO = LAB.parent.parent
OUT = LAB / "out"
PCAPS = REPO / "samples" / "pcaps"


def venv_python(drv: Driver) -> Path:
    return OUT / drv.venv / "bin" / "python"


def installed_marker(drv: Driver) -> Path | None:
    """A path install.sh creates for this driver (None: a Debian package, checked by apt)."""
    if drv.kind == "python":
        return venv_python(drv)
    if drv.kind == "node":
        legacy = drv.script == "run_tedious_legacy.js"
        base = OUT / "node-legacy" if legacy else LAB / "drivers"
        return base / "node_modules" / "tedious"
    return None


def driver_command(
    drv: Driver, args: dict[str, Any], keylog: Path
) -> tuple[list[str], dict[str, str]]:
    # Strict (TDS 8.0) always validates the certificate, so the lab's own CA must be trusted.
    env = {
        "SSLKEYLOGFILE": str(keylog),
        "SSL_CERT_FILE": args["cafile"],
        "NODE_EXTRA_CA_CERTS": args["cafile"],
        **drv.env,
    }
    payload = json.dumps(args)
    if drv.kind == "python":
        return [
            str(venv_python(drv)),
            str(LAB / "drivers" / "pydrivers.py"),
            drv.module,
            payload,
        ], env
    if drv.kind == "node":
        return [
            "node",
            f"--tls-keylog={keylog}",
            str(LAB / "drivers" / drv.script),
            payload,
        ], env
    return ["sh", str(LAB / "drivers" / "run_tsql.sh"), payload], env


def wait_for(path: Path, limit: float) -> bool:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if path.exists():
            return True
        time.sleep(0.05)
    return False


def run_one(sc: Scenario, drv: Driver, runs: Path, cert: Path, key: Path) -> dict[str, Any]:
    base = f"{sc.name}__{drv.name}"
    work = runs / base
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    pcap, log, keys = work / f"{base}.pcap", work / "server.jsonl", work / f"{base}.keys"
    client_keys = work / "client.keys"
    cfg = {
        "log": str(log),
        "cert": str(cert),
        "key": str(key),
        "keylog": str(keys),
        "ready_file": str(work / "ready"),
        "listeners": sc.listeners,
        "dns": DNS_CONFIG,
    }
    (work / "server.json").write_text(json.dumps(cfg, indent=1))
    args = {
        "host": sc.connect_host,
        "port": sc.connect_port,
        "user": "labuser",
        "password": "Lab-Passw0rd!",
        "database": "appdb",
        "encrypt": sc.encrypt,
        "login_only": sc.login_only,
        "readonly": sc.readonly,
        "tds_version": sc.tds_version,
        "timeout": sc.timeout,
        "cafile": str(cert),
        "workdir": str(work),
    }
    started = time.time()
    netlab.setup()
    server = tcpdump = None
    server_out = (work / "server.out").open("w")
    try:
        server = subprocess.Popen(
            netlab.in_ns(
                netlab.SERVER_NS,
                sys.executable,
                "-m",
                "samples.lab.server",
                str(work / "server.json"),
            ),
            cwd=REPO,
            stdout=server_out,
            stderr=subprocess.STDOUT,
        )
        if not wait_for(work / "ready", 10):
            raise RuntimeError(f"simulator did not start: {(work / 'server.out').read_text()}")
        netlab.firewall(sc.firewall)
        netlab.lossy(sc.loss_percent)
        tcpdump = subprocess.Popen(
            netlab.in_ns(
                netlab.CLIENT_NS,
                "tcpdump",
                "-i",
                netlab.CLIENT_IF,
                "-s",
                "0",
                "-U",
                "-Z",
                "root",
                "-w",
                str(pcap),
                "ip",
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert tcpdump.stderr is not None
        tcpdump.stderr.readline()  # "listening on tdlc0 ..." once the capture is live
        time.sleep(0.2)
        cmd, env = driver_command(drv, args, client_keys)
        full = netlab.in_ns(netlab.CLIENT_NS, "env", *[f"{k}={v}" for k, v in env.items()], *cmd)
        try:
            proc = subprocess.run(
                full, cwd=LAB / "drivers", capture_output=True, text=True, timeout=sc.timeout + 45
            )
            out_lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            client = (
                json.loads(out_lines[-1])
                if out_lines
                else {
                    "ok": False,
                    "error": f"no result; exit {proc.returncode}: {proc.stderr[-400:]}",
                }
            )
            (work / "client.out").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
        except subprocess.TimeoutExpired:
            client = {"ok": False, "error": "lab: client killed after its time limit"}
        time.sleep(1.0)  # let FINs/RSTs and late retransmissions land in the capture
        hits = netlab.firewall_hits(sc.firewall)
        seen = netlab.syn_seen()
    finally:
        if tcpdump is not None:
            tcpdump.send_signal(signal.SIGINT)
            tcpdump.wait(10)
        if server is not None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
        netlab.teardown()
        server_out.close()
    inputs = {
        "scenario": sc.name,
        "driver": drv.name,
        "client": client,
        "hits": hits,
        "seen": seen,
        "args": args,
        "started": started,
        "duration": time.time() - started,
    }
    (work / "lab_inputs.json").write_text(json.dumps(inputs, indent=1))
    return write_expected(work)


def keep_keylog(keys: Path) -> bool:
    """Whether a run has a key log: one without a secret is deleted. The simulator's ssl module
    writes a comment line when it starts, so a run with no TLS session would leave one behind."""
    if not keys.exists():
        return False
    lines = keys.read_text(errors="replace").splitlines()
    if any(ln.strip() and not ln.startswith("#") for ln in lines):
        return True
    keys.unlink()
    return False


def write_expected(work: Path) -> dict[str, Any]:
    """(Re)build a run's expected file from what the run recorded (no network needed)."""
    inp = json.loads((work / "lab_inputs.json").read_text())
    sc, drv = BY_SCENARIO[inp["scenario"]], BY_DRIVER[inp["driver"]]
    base = work.name
    pcap, log, keys = work / f"{base}.pcap", work / "server.jsonl", work / f"{base}.keys"
    events = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    expected = build_expected(
        scenario=sc,
        driver=drv,
        client=inp["client"],
        events=events,
        hits=inp["hits"],
        seen=inp["seen"],
        capture=pcap.name,
        keylog=keys.name if keep_keylog(keys) else None,
        args=inp["args"],
        started=inp["started"],
        duration=inp["duration"],
    )
    (work / f"{base}.json").write_text(json.dumps(expected, indent=2) + "\n")
    return expected


def publish(runs: Path, only: set[str] | None = None) -> None:
    """Copy finished runs (capture, keys, expected) into samples/pcaps: all, or those in `only`."""
    PCAPS.mkdir(parents=True, exist_ok=True)
    for work in sorted(runs.iterdir()):
        base = work.name
        if only is not None and base not in only:
            continue
        if not (work / f"{base}.json").exists():
            continue
        for suffix in (".pcap", ".keys", ".json"):
            src = work / f"{base}{suffix}"
            if suffix == ".keys" and not keep_keylog(src):
                (PCAPS / src.name).unlink(missing_ok=True)  # a stale one, from an earlier run
                continue  # no TLS session in this run: the expected file says keylog null
            if src.exists():
                shutil.copy2(src, PCAPS / src.name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-s", "--scenario", action="append", choices=sorted(BY_SCENARIO))
    ap.add_argument("-d", "--driver", action="append", choices=sorted(BY_DRIVER))
    ap.add_argument("--publish", action="store_true", help="copy results into samples/pcaps")
    ap.add_argument(
        "--rebuild", action="store_true", help="only rebuild expected files of earlier runs"
    )
    args = ap.parse_args(argv)
    scenarios = [BY_SCENARIO[n] for n in args.scenario] if args.scenario else SCENARIOS
    drivers = [BY_DRIVER[n] for n in args.driver] if args.driver else DRIVERS
    # With -s/-d, only the selected runs are rebuilt and published; without, all of them.
    selected = (
        {f"{sc.name}__{drv.name}" for sc in scenarios for drv in drivers if takes_part(sc, drv)}
        if args.scenario or args.driver
        else None
    )
    if args.rebuild:
        for work in sorted((OUT / "runs").iterdir()):
            if selected is not None and work.name not in selected:
                continue
            if (work / "lab_inputs.json").exists():
                write_expected(work)
        if args.publish:
            publish(OUT / "runs", selected)
        return 0
    if os.geteuid() != 0:
        print("the lab needs root (network namespaces, tcpdump, nft)", file=sys.stderr)
        return 2
    markers = {installed_marker(d) for d in drivers}
    missing = sorted(str(p) for p in markers if p is not None and not p.exists())
    if missing:
        print(f"run samples/lab/install.sh first (missing {missing})", file=sys.stderr)
        return 2
    cert, key = make_cert(OUT / "tls", CERT_NAMES)
    runs = OUT / "runs"
    t0 = time.time()
    for sc in scenarios:
        for drv in drivers:
            if not takes_part(sc, drv):
                continue
            t = time.time()
            exp = run_one(sc, drv, runs, cert, key)
            v = exp["verdict"]
            print(
                f"{sc.name:30} {drv.name:22} {v['result']:6} {v.get('reason') or '':28}"
                f" {time.time() - t:5.1f}s  {(v.get('client_error') or '')[:70]}",
                flush=True,
            )
    print(f"total {time.time() - t0:.0f}s")
    if args.publish:
        publish(runs, selected)
    return 0


if __name__ == "__main__":
    sys.exit(main())
