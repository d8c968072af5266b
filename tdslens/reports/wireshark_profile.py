"""Wireshark display filters for the report, and a profile folder (``--wireshark-profile``).

Why a profile: Wireshark only decodes TDS on 1433 by default, so the redirected second legs
(11000-11999, 14000-14999) show as bare TCP, and the streams a finding is about do not stand out.
A profile folder fixes both without touching the user's own settings: copy it into Wireshark's
profiles directory (or point ``-C`` at it) and open the capture with it. See docs/reports.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

REDIRECT_PORT_RANGES = ((11000, 11999), (14000, 14999))
# How the analyzer's frame lists are cut for a filter: Wireshark accepts long sets, people don't.
MAX_FILTER_ITEMS = 60


def stream_filter(streams: Iterable[int]) -> str:
    """``tcp.stream eq N`` for one stream, ``tcp.stream in {a b c}`` for several."""
    items = sorted(set(int(s) for s in streams))
    if not items:
        return ""
    if len(items) == 1:
        return f"tcp.stream eq {items[0]}"
    return "tcp.stream in {" + " ".join(str(s) for s in items[:MAX_FILTER_ITEMS]) + "}"


def frame_filter(frames: Iterable[int]) -> str:
    """``frame.number in {a b c}`` (the evidence frames of a finding)."""
    items = sorted(set(int(f) for f in frames))
    if not items:
        return ""
    if len(items) == 1:
        return f"frame.number == {items[0]}"
    return "frame.number in {" + " ".join(str(f) for f in items[:MAX_FILTER_ITEMS]) + "}"


def decode_as_args() -> str:
    """The tshark options that decode the redirect port ranges as TDS."""
    return " ".join(f"-d tcp.port=={lo}-{hi},tds" for lo, hi in REDIRECT_PORT_RANGES)


def _decode_as_entries() -> str:
    """decode_as_entries in the format Wireshark writes it (one entry per port)."""
    lines = ["# Written by tdslens: redirected Azure SQL ports decode as TDS.", ""]
    for lo, hi in REDIRECT_PORT_RANGES:
        for port in range(lo, hi + 1):
            lines.append(f"decode_as_entry: tcp.port,{port},(none),TDS")
    return "\n".join(lines) + "\n"


def _colorfilters(failed_streams: list[int], failed_frames: list[int]) -> str:
    """Coloring rules: evidence frames dark red, failed streams light red, TDS routing blue.

    Format of Wireshark's ``colorfilters``: ``@name@filter@[fg r,g,b][bg r,g,b]`` (16-bit values).
    """
    rules: list[str] = ["# Written by tdslens. Rules are tried in order; the first match colours."]
    if failed_frames:
        rules.append(
            f"@tdslens evidence@{frame_filter(failed_frames)}@[65535,65535,65535][42405,0,0]"
        )
    if failed_streams:
        rules.append(
            f"@tdslens failed stream@{stream_filter(failed_streams)}@[0,0,0][65535,49087,49087]"
        )
    rules += [
        "@tdslens TCP SYN unanswered@tcp.flags.syn == 1 && tcp.flags.ack == 0 && "
        "tcp.analysis.retransmission@[0,0,0][65535,55769,42405]",
        "@tdslens TCP reset@tcp.flags.reset == 1@[65535,65535,65535][30069,0,0]",
        "@tdslens TDS@tds@[0,0,0][56283,60395,65535]",
        "@tdslens DNS@dns@[0,0,0][59367,65535,59367]",
        "@Bad TCP@tcp.analysis.flags && !tcp.analysis.window_update@[4626,10023,11822]"
        "[63479,34695,34695]",
        "@TCP@tcp@[4626,10023,11822][59110,59110,65535]",
        "@UDP@udp@[4626,10023,11822][56026,61166,65535]",
    ]
    return "\n".join(rules) + "\n"


def failed_evidence(doc: dict[str, Any]) -> tuple[list[int], list[int]]:
    """Streams and frames named by error and warning findings in a report document."""
    streams: set[int] = set()
    frames: set[int] = set()
    for f in doc.get("findings") or []:
        if f.get("severity") in ("error", "warning"):
            streams.update(f.get("connections") or [])
            frames.update(f.get("frames") or [])
    return sorted(streams), sorted(frames)


def write_wireshark_profile(doc_or_analysis: Any, directory: str | Path) -> Path:
    """Write a Wireshark profile folder for one report; returns the folder.

    Takes the report document (``to_json``) or an Analysis. The folder holds
    ``decode_as_entries`` (11000-11999 and 14000-14999 as TDS), ``colorfilters`` (the failed
    streams and evidence frames stand out) and a ``recent`` file that turns colouring on.
    """
    if not isinstance(doc_or_analysis, dict):
        from tdslens.reports.json_report import to_json

        doc_or_analysis = to_json(doc_or_analysis)
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    streams, frames = failed_evidence(doc_or_analysis)
    (folder / "decode_as_entries").write_text(_decode_as_entries(), encoding="utf-8")
    (folder / "colorfilters").write_text(_colorfilters(streams, frames), encoding="utf-8")
    (folder / "recent").write_text(
        "# Written by tdslens.\ngui.coloring_rules_enabled: TRUE\n", encoding="utf-8"
    )
    return folder
