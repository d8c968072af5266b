"""The project's sample captures (samples/pcaps), dissected and compared with tshark.

Unlike ../shared/captures these are ours: lab runs of real drivers against the simulator, on
1433 and on redirect ports. Every connection that starts like TDS (PRELOGIN or a TDS 8.0
ClientHello) must dissect without a Malformed or ProtocolViolation event, and every frame where
tshark shows a TDS packet type must hold the same packets in our events — except Wireshark's
known TDS 8.0 gap: it reads a TLS-first stream's records as TDS packet types 20-23 and 0.
"""

from __future__ import annotations

import subprocess
from collections import defaultdict
from pathlib import Path

import pytest
import tds_bytes as tb

from tdslens.dissectors import events as ev
from tdslens.dissectors.session import TdsDirection
from tdslens.dissectors.tds import looks_like_tds, looks_like_tds8

SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "pcaps"
PCAPS = sorted(p for p in SAMPLES.glob("*.pcap*") if p.is_file()) if SAMPLES.is_dir() else []


def _dissect(path: Path) -> tuple[dict[int, list[ev.Event]], set[int]]:
    """Our events by last frame, and the frames of TLS-first (TDS 8.0) connections."""
    by_frame: dict[int, list[ev.Event]] = defaultdict(list)
    tls_first: set[int] = set()
    for conn in tb.capture_streams(path, server_port=None):
        head = b"".join(c.data for c in conn if c.from_client)[:1024]
        if not (looks_like_tds(head) or looks_like_tds8(head)):
            continue
        if looks_like_tds8(head):
            tls_first.update(c.frame for c in conn)
        sides = {True: TdsDirection(True), False: TdsDirection(False)}
        for c in conn:
            for e in tb.feed_chunk(sides[c.from_client], c):
                by_frame[e.frames[-1]].append(e)
        for side in sides.values():
            for e in side.eof():
                by_frame[e.frames[-1]].append(e)
    return by_frame, tls_first


def _wireshark_server_name(tshark_value: str, login: ev.Login7) -> str:
    """Wireshark 4.0's error, pinned: in TDS 7.4 LOGIN7, ibExtension/cbExtension (which it calls
    "Unknown1") point to a 4-byte offset of the FeatureExt block (MS-TDS 2.2.6.4), and Wireshark
    prints those 4 bytes as a second "Server name". We read FeatureExt through them instead."""
    names = tshark_value.split(SEP)
    if len(names) == 2:
        assert len(names[1]) <= 2, "the extra value is the 4-byte pointer read as UTF-16"
        assert login.features, "the pointer leads to the feature extensions we decoded"
        return names[0]
    return tshark_value


_WORKER_FRAMES: dict[Path, set[int]] = {}
SEP = "\x1f"  # joins repeated tshark fields: server names may hold commas (host,port)


def _worker_frames(path: Path, tshark: str) -> set[int]:
    """Frames on a redirect port (11000-11999), where only content tells TDS apart."""
    if path not in _WORKER_FRAMES:
        out = subprocess.run(
            [
                tshark,
                "-r",
                str(path),
                "-Y",
                "tcp.port >= 11000 && tcp.port <= 11999",
                "-T",
                "fields",
                "-e",
                "frame.number",
            ],
            capture_output=True,
            check=True,
            text=True,
        ).stdout
        _WORKER_FRAMES[path] = {int(n) for n in out.split()}
    return _WORKER_FRAMES[path]


@pytest.mark.skipif(not PCAPS, reason="samples/pcaps holds no captures yet")
@pytest.mark.parametrize("path", PCAPS, ids=[p.name for p in PCAPS])
def test_sample_dissects_cleanly_and_agrees_with_tshark(path, tshark):
    ours, tls_first = _dissect(path)
    problems = [
        e
        for es in ours.values()
        for e in es
        if isinstance(e, ev.Malformed | ev.ProtocolViolation | ev.CannotContinue)
    ]
    assert problems == []
    # Worker legs (11000-11999) are TDS to us by content; tshark needs to be told (-d), and
    # without it would compare nothing there.
    cmd = [tshark, "-o", "tcp.reassemble_out_of_order:TRUE", "-d", "tcp.port==11000-11999,tds"]
    cmd += ["-r", str(path), "-T", "fields", "-E", "occurrence=a", "-E", f"aggregator={SEP}"]
    for field in (
        "frame.number",
        "tds.type",
        "tds.envchange.type",
        "tds.error.number",
        "tds.7login.username",
        "tds.7login.servername",
        "tds.7login.appname",
    ):
        cmd += ["-e", field]
    out = subprocess.run(cmd, capture_output=True, check=True, text=True).stdout
    compared_worker_frames = 0
    for line in out.splitlines():
        frame, types, envs, errors, user, server, app = [*line.split("\t"), *[""] * 7][:7]
        if not types or int(frame) in tls_first:
            continue  # tshark's TDS 8.0 gap: TLS records misread as TDS packets
        es = ours.get(int(frame), [])
        got = [str(e.type) for e in es if isinstance(e, ev.TdsPacket)]
        assert SEP.join(got) == types, f"frame {frame}"
        # ENVCHANGE types agree; for routing (20) tshark stops at the type, we decode the target.
        ours_envs = [
            str(20 if isinstance(e, ev.EnvChangeRouting) else e.type)
            for e in es
            if isinstance(e, ev.EnvChange | ev.EnvChangeRouting)
        ]
        assert SEP.join(ours_envs) == envs, f"frame {frame}"
        for r in (e for e in es if isinstance(e, ev.EnvChangeRouting)):
            assert r.protocol == 0 and 0 < r.port < 65536 and r.server
        ours_errors = [str(e.number) for e in es if isinstance(e, ev.Error)]
        assert SEP.join(ours_errors) == errors, f"frame {frame}"
        logins = [e for e in es if isinstance(e, ev.Login7)]
        if user or server or app:
            [login] = logins
            server = _wireshark_server_name(server, login)
            assert (login.username, login.servername, login.appname) == (user, server, app)
        compared_worker_frames += any(isinstance(e, ev.TdsPacket) for e in es) and int(
            frame
        ) in _worker_frames(path, tshark)
    if "redirect_ok" in path.name or "redirect_cleartext" in path.name:
        assert compared_worker_frames, "the worker leg was not compared with tshark"
