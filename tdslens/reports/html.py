"""The one-page HTML report: a self-contained file a support engineer can open, print or attach.

Why it is built this way:
- It renders the JSON report document (``to_json``), so HTML, JSON and CSV always agree and a
  redacted analysis is redacted everywhere alike. From an Analysis it reads the document's
  items as they are made (``lazy_json``), never the whole document at once: a big capture's
  connection entries as dicts would take more memory than its whole analysis.
- Jinja2 with autoescape on: every capture-derived string (host names, SNI, user names, server
  error messages) is attacker-controllable, and is only ever inserted as escaped text.
- No external fetch and nothing that needs a script to be read: CSS is inline, the ladder
  diagrams are inline SVG computed here, and the only script (table sorting and filtering) is
  allowed by its hash in the Content-Security-Policy and is optional.
- Big captures stay usable: the connection table is one lean row per connection up to
  ``MAX_TABLE_ROWS`` (docs/reports.md, "Size limits"); ladders are drawn for the groups that
  matter first, at most ``MAX_LADDERS``.
"""

from __future__ import annotations

import base64
import hashlib
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, NamedTuple

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup, escape

from tdslens.analyzer.model import Analysis
from tdslens.reports.json_report import ConnectionEntries, Entries, lazy_json
from tdslens.reports.wireshark_profile import (
    REDIRECT_PORT_RANGES,
    decode_as_args,
    frame_filter,
    stream_filter,
)

MAX_TABLE_ROWS = 50_000
MAX_LADDERS = 24
MAX_LADDER_CONNECTIONS = 12
MAX_DNS_ROWS = 500
MAX_ATTEMPT_ROWS = 500  # also redirects: the side tables; the full lists are in JSON/CSV
FAILED_OUTCOMES = frozenset({"no_answer", "refused", "login_error", "tls_alert"})
PHASE_SHORT = {
    "tcp_handshake": "TCP",
    "prelogin": "PRE",
    "tls": "TLS",
    "login": "LOGIN",
    "login_response": "RESP",
    "redirect": "ROUTE",
    "data": "DATA",
    "close": "CLOSE",
}
OUTCOME_TEXT = {
    "no_answer": "no answer to SYN",
    "refused": "refused (RST)",
    "redirected": "redirected",
    "login_error": "login error",
    "tls_alert": "TLS alert",
    "logged_in": "logged in",
    "not_tds": "not TDS",
    "no_data": "no data",
}
LANES = ("client", "DNS", "gateway / server", "worker / replica")
LANE_X = (110, 300, 560, 820)
SVG_WIDTH = 1100
ROW_H = 24
LADDER_TOP = 44

# Rows are sent in <tbody> chunks of ROW_CHUNK, each with content-visibility:auto: Chromium
# then styles and lays out only the chunks on screen. Laying out 30,000 table rows at once takes
# it tens of seconds (measured: docs/reports.md, "Size limits").
ROW_CHUNK = 500
# The optional script: click a column heading to sort, type to filter. Plain DOM, textContent
# only. It reads every key once, then rebuilds the chunks off-document and attaches them in one
# go, so the page is laid out once per click, not once per row. Filtered-out rows wait in one
# hidden tbody.
SCRIPT = """(function(){
var t=document.getElementById('conns');if(!t)return;
var N=@CHUNK@,hs=t.tHead.rows[0].cells,dir={},all=[],shown;
for(var b=0;b<t.tBodies.length;b++){var r=t.tBodies[b].rows;
for(var i=0;i<r.length;i++){r[i]._h=false;all.push(r[i]);}}
function put(){var bs=Array.prototype.slice.call(t.tBodies),f=document.createDocumentFragment(),
tb=null,hid=document.createElement('tbody'),c=0;
for(var i=0;i<bs.length;i++)t.removeChild(bs[i]);hid.hidden=true;
for(var i=0;i<all.length;i++){var r=all[i];if(r._h){hid.appendChild(r);continue;}
if(c%N===0){tb=document.createElement('tbody');f.appendChild(tb);}tb.appendChild(r);c++;}
for(var j=0;j<f.childNodes.length;j++){var x=f.childNodes[j];
x.style.containIntrinsicSize='auto '+(x.rows.length*21)+'px';}
f.appendChild(hid);t.appendChild(f);return c;}
function sortBy(c){var num=hs[c].hasAttribute('data-num'),d=dir[c]=-(dir[c]||-1),k=[];
for(var i=0;i<all.length;i++){var r=all[i],s=r.cells[c]?r.cells[c].textContent:'';
var v=num?parseFloat(s):s.toLowerCase();if(num&&isNaN(v))v=-Infinity;k.push([v,i,r]);}
k.sort(function(a,b){return a[0]<b[0]?-d:a[0]>b[0]?d:a[1]-b[1];});
all=k.map(function(x){return x[2];});put();
for(var h=0;h<hs.length;h++)hs[h].removeAttribute('aria-sort');
hs[c].setAttribute('aria-sort',d>0?'ascending':'descending');}
for(var i=0;i<hs.length;i++){(function(c){hs[c].tabIndex=0;
hs[c].addEventListener('click',function(){sortBy(c);});
hs[c].addEventListener('keydown',function(e){if(e.key==='Enter')sortBy(c);});})(i);}
var q=document.getElementById('filter'),n=document.getElementById('shown'),tm;
if(!q)return;document.getElementById('filterbox').hidden=false;
q.addEventListener('input',function(){clearTimeout(tm);tm=setTimeout(function(){
var v=q.value.toLowerCase();for(var i=0;i<all.length;i++)
all[i]._h=!!v&&all[i].textContent.toLowerCase().indexOf(v)<0;
n.textContent=String(put());},150);});
})();""".replace("@CHUNK@", str(ROW_CHUNK))
SCRIPT_HASH = "sha256-" + base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    f"script-src '{SCRIPT_HASH}'; base-uri 'none'; form-action 'none'"
)

_ENV = Environment(
    loader=PackageLoader("tdslens.reports", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def render_html(analysis: Analysis) -> str:
    """The report as one self-contained HTML page."""
    return render_html_document(lazy_json(analysis))


def write_html(analysis: Analysis, path: str | Path) -> Path:
    """Write ``render_html(analysis)`` as UTF-8; returns the path written."""
    path = Path(path)
    path.write_text(render_html(analysis), encoding="utf-8")
    return path


def render_html_document(doc: dict[str, Any]) -> str:
    """Render a report document: ``to_json``'s, or ``lazy_json``'s, whose long lists make
    their items as they are read (the connection entries once for the table, again for the
    few legs the ladders and the decryption table draw)."""
    template = _ENV.get_template("report.html.j2")
    if isinstance(doc.get("findings"), Entries):  # read three times below: made once
        doc = {**doc, "findings": list(doc["findings"])}
    conns: Sequence[dict[str, Any]] = doc["connections"]
    briefs = _briefs(conns)
    findings = doc.get("findings")
    red = _red_streams(doc, briefs)
    port_of = {b.stream: b.port for b in briefs}  # once: a capture has thousands of findings
    return template.render(
        doc=doc,
        csp=CSP,
        script=Markup(SCRIPT),  # our constant, never capture data
        verdict=_verdict(doc),
        findings=[_finding_view(f, port_of) for f in findings or []],
        has_findings=bool(doc.get("correlated")),
        ladders=_ladders(doc, briefs, red, conns.__getitem__),
        row_chunks=[
            (len(chunk), _rows_html(chunk))
            for chunk in _chunks((_row(c, red) for c in islice(conns, MAX_TABLE_ROWS)), ROW_CHUNK)
        ],
        row_count=min(len(conns), MAX_TABLE_ROWS),
        rows_cut=max(0, len(conns) - MAX_TABLE_ROWS),
        port_roles=any(b.role_source == "port" for b in briefs),
        dns_rows=doc["dns"][:MAX_DNS_ROWS],
        dns_count=len(doc["dns"]),
        dns_cut=max(0, len(doc["dns"]) - MAX_DNS_ROWS),
        redirects=doc.get("redirects") or [],
        decryption_rows=[
            conns[b.index] for b in islice((b for b in briefs if b.decrypted), MAX_ATTEMPT_ROWS)
        ],
        attempts=(doc.get("attempts") or [])[:MAX_ATTEMPT_ROWS],
        attempts_cut=max(0, len(doc.get("attempts") or []) - MAX_ATTEMPT_ROWS),
        outcome_text=OUTCOME_TEXT,
        fmt_bytes=_fmt_bytes,
        fmt_dur=_fmt_dur,
        decode_as=decode_as_args(),
        side_rows=MAX_ATTEMPT_ROWS,
        row_chunk=ROW_CHUNK,
        svg_width=SVG_WIDTH,
        lane_x=LANE_X,
        uses_redirect_ports=any(_redirect_port(b.port) for b in briefs),
    )


class _Brief(NamedTuple):
    """What the page needs of every connection besides its table row: enough to pick the red
    legs, the ladders' groups and the decryption rows without the whole entry."""

    index: int  # position in the document's connections
    stream: int
    protocol: str
    client: str  # address
    port: int  # server port
    start_ns: int
    outcome: str
    role_source: str
    decrypted: bool  # the entry's "decryption" is set


def _briefs(conns: Sequence[dict[str, Any]]) -> list[_Brief]:
    """Briefs of the document's connections; of a lazy document's, read off the records, not
    the entries (the same fields as json_report's ``_connection``)."""
    if isinstance(conns, ConnectionEntries):
        roles, outcomes = conns.roles, conns.outcomes
        return [
            _Brief(i, c.stream, c.protocol, c.client.address, c.server.port, c.tcp.first_ts_ns,
                   outcomes[c.stream], roles[c.stream].source, c.decryption is not None)
            for i, c in enumerate(conns.items)
        ]  # fmt: skip
    return [
        _Brief(i, c["tcp_stream"], c["protocol"], c["client"]["address"], c["server"]["port"],
               c["start_ns"], c["outcome"], c["role_source"], bool(c.get("decryption")))
        for i, c in enumerate(conns)
    ]  # fmt: skip


# -- verdict and findings ------------------------------------------------------------------------


@dataclass(slots=True)
class Verdict:
    level: str  # "error", "warning", "ok", "unknown"
    headline: str
    detail: str


VERDICT_LEVEL = {"failed": "error", "mixed": "warning", "ok": "ok"}


def _verdict(doc: dict[str, Any]) -> Verdict:
    """The analysis's own verdict and the finding that explains it; the report adds nothing."""
    findings = doc.get("findings") or []
    by_code = {f["code"]: f for f in findings}
    v = doc.get("verdict")
    if v:
        explain = by_code.get(v.get("finding") or "")
        detail = f"{explain['title']}. {explain['detail']}" if explain else ""
        return Verdict(VERDICT_LEVEL.get(v["result"], "unknown"), v["summary"], detail)
    if not doc.get("correlated"):
        return Verdict(
            "unknown",
            "No diagnosis in this analysis",
            "The analysis carries no findings (correlation did not run); "
            "the connections and their outcomes below are what the capture shows.",
        )
    for level in ("error", "warning"):
        hits = [f for f in findings if f["severity"] == level]
        if hits:
            more = f" (and {len(hits) - 1} more)" if len(hits) > 1 else ""
            return Verdict(level, hits[0]["title"] + more, hits[0]["detail"])
    return Verdict("ok", "No problem found", "No finding of error or warning severity.")


def _redirect_port(port: int) -> bool:
    return any(lo <= port <= hi for lo, hi in REDIRECT_PORT_RANGES)


def _finding_view(f: dict[str, Any], port_of: dict[int, int]) -> dict[str, Any]:
    """``port_of``: the server port of each tcp.stream."""
    streams = [s for s in f["connections"] if s in port_of]
    return {
        **f,
        "stream_filter": stream_filter(f["connections"]),
        "frame_filter": frame_filter(f["frames"]),
        "worker_ports": sorted({port_of[s] for s in streams if _redirect_port(port_of[s])}),
    }


BAD_REDIRECT_OUTCOMES = frozenset({"blocked", "refused", "failed"})


def _red_streams(doc: dict[str, Any], briefs: list[_Brief]) -> set[int]:
    """Legs drawn as failed: a failure outcome, the second legs of a redirect that failed, or a
    leg cut short that an error finding names (a gateway leg that was routed is not the failure).
    """
    gateways = {r.get("gateway") for r in doc.get("redirects") or []}
    bad_second = {
        s
        for r in doc.get("redirects") or []
        if r.get("outcome") in BAD_REDIRECT_OUTCOMES
        for s in r.get("second_legs") or []
    }
    in_error = {
        s for f in doc.get("findings") or [] if f["severity"] == "error" for s in f["connections"]
    }
    red = set()
    for b in briefs:
        s, outcome = b.stream, b.outcome
        failed = outcome in FAILED_OUTCOMES or (s in bad_second and outcome != "logged_in")
        cut_short = outcome.startswith("stopped_after_") and s in in_error and s not in gateways
        if failed or cut_short:
            red.add(s)
    return red


# -- table ---------------------------------------------------------------------------------------


def _row(c: dict[str, Any], red: set[int]) -> tuple[Any, ...]:
    """One table row as a tuple of cell texts (the template writes them without extra markup)."""
    tls = c["tls"] or {}
    login = c["login"] or {}
    tls_text = " ".join(x for x in (tls.get("version"), tls.get("sni")) if x)
    tds = c["tds"]["login_version"] or c["tds"]["server_version"] or ""
    who = (
        " / ".join(login.get(k) or "" for k in ("username", "database", "appname")) if login else ""
    )
    return (
        c["tcp_stream"] in red,
        c["tcp_stream"],
        f"{c['client']['address']}:{c['client']['port']}",
        f"{c['server']['address']}:{c['server']['port']}",
        c["role"],
        OUTCOME_TEXT.get(c["outcome"], c["outcome"].replace("_", " ")),
        "\u203a".join(PHASE_SHORT[p["name"]] + ("?" if p["inferred"] else "") for p in c["phases"]),
        c["first_frame"],
        c["start"][11:23] if c["start"] else "",
        f"{c['duration_ns'] / 1e6:.1f}",
        tls_text,
        tds,
        who,
    )


def _rows_html(rows: list[tuple[Any, ...]]) -> Markup:
    """The rows of one tbody, every cell escaped here (a Jinja loop over 30,000 rows of 12 cells
    takes several seconds; this takes a fraction of that and escapes the same way)."""
    out = []
    for r in rows:
        cells = "<td>".join(str(escape(v)) for v in r[1:])
        out.append(('<tr class="f"><td>' if r[0] else "<tr><td>") + cells)
    return Markup("".join(out))


def _chunks(rows: Iterator[Any], n: int) -> Iterator[list[Any]]:
    while chunk := list(islice(rows, n)):
        yield chunk


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _fmt_dur(ns: int | None) -> str:
    if ns is None:
        return "—"
    if ns < 1_000_000_000:
        return f"{ns / 1e6:.3f} ms"
    return f"{ns / 1e9:.3f} s"


# -- ladder diagrams -------------------------------------------------------------------------------


@dataclass(slots=True)
class Arrow:
    """One row of a ladder: an arrow between two lanes with its label and time."""

    y: int
    x1: int
    x2: int
    label: str
    frames: str
    time: str
    red: bool = False
    both: bool = False  # exchange (arrow heads on both ends)
    dashed: bool = False  # inferred from encrypted traffic, or unanswered
    lost: bool = False  # never arrived: a cross at the end instead of a head

    @property
    def lx(self) -> int:
        """Where the label starts: just right of the arrow's left end."""
        return min(self.x1, self.x2) + 12


@dataclass(slots=True)
class Ladder:
    title: str
    subtitle: str
    height: int
    arrows: list[Arrow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failed: bool = False
    lane_x: tuple[int, ...] = LANE_X
    lanes: tuple[str, ...] = LANES


def _ladders(
    doc: dict[str, Any],
    briefs: list[_Brief],
    red: set[int],
    entry: Callable[[int], dict[str, Any]],
) -> list[Ladder]:
    """Ladders of the groups that matter first: each client attempt's, or without attempts
    each client's. Entries are read for the groups drawn only: ``entry(i)`` makes the
    document's i-th connection entry, and the DNS messages are kept only when drawn."""
    conns = [b for b in briefs if b.protocol != "other"]
    by_stream = {b.stream: b for b in conns}
    groups: list[tuple[Any, list[_Brief]]] = []  # (attempt's position, or client; legs)
    attempts = doc.get("attempts")
    if attempts:
        for k, att in enumerate(attempts):
            legs = [by_stream[s] for s in _attempt_streams(att) if s in by_stream]
            if legs:
                groups.append((k, legs))
    else:
        by_client: dict[str, list[_Brief]] = defaultdict(list)
        for c in conns:
            by_client[c.client].append(c)
        groups = list(by_client.items())
    groups.sort(key=lambda g: (not any(c.stream in red for c in g[1]), g[1][0].start_ns))
    drawn = groups[:MAX_LADDERS]
    if attempts:
        chosen = [attempts[k] for k, _ in drawn]
        frames = {f for att in chosen for f in att.get("dns_frames") or []}
        dns_by_frame = {d["frame"]: d for d in doc["dns"] if d["frame"] in frames}
        titled = [
            (
                _attempt_title(att),
                [dns_by_frame[f] for f in att.get("dns_frames") or [] if f in dns_by_frame],
            )
            for att in chosen
        ]
    else:
        clients = {client for client, _ in drawn}
        dns_by_client: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for d in doc["dns"]:
            if d["client"]["address"] in clients:
                dns_by_client[d["client"]["address"]].append(d)
        titled = [(f"Connections from {c}", dns_by_client.get(c, [])) for c, _ in drawn]
    out = [
        _ladder(title, legs, dns, red, entry)
        for (title, dns), (_, legs) in zip(titled, drawn, strict=True)
    ]
    if len(groups) > MAX_LADDERS:
        out[-1].notes.append(
            f"{len(groups) - MAX_LADDERS} more group(s) not drawn: see the connection table."
        )
    return out


def _attempt_title(att: dict[str, Any]) -> str:
    v = att.get("verdict") or {}
    target = att.get("server_name") or "{address}:{port}".format(**att["server"])
    title = f"Attempt {att.get('index')}: {att.get('client')} \u2192 {target}"
    if v:
        title += f": {v.get('result')}" + (f", {v['summary']}" if v.get("summary") else "")
    return title


def _attempt_streams(att: Any) -> list[int]:
    if not isinstance(att, dict):
        return []
    streams: list[int] = []
    for key in ("legs", "connections", "streams"):
        for leg in att.get(key) or []:
            if isinstance(leg, int):
                streams.append(leg)
            elif isinstance(leg, dict):
                s = leg.get("stream", leg.get("tcp_stream", leg.get("connection")))
                if isinstance(s, int):
                    streams.append(s)
        if streams:
            break
    return streams


def _lane(conn: dict[str, Any]) -> int:
    return 3 if conn["role"] in ("worker", "replica") else 2


def _ladder(
    title: str,
    briefs: list[_Brief],
    dns: list[dict[str, Any]],
    red: set[int],
    entry: Callable[[int], dict[str, Any]],
) -> Ladder:
    notes: list[str] = []
    if len(briefs) > MAX_LADDER_CONNECTIONS:
        keep = sorted(briefs, key=lambda c: (c.stream not in red, c.start_ns))
        keep = sorted(keep[:MAX_LADDER_CONNECTIONS], key=lambda c: c.start_ns)
        notes.append(
            f"{len(briefs) - len(keep)} more connection(s) of this group are in the table."
        )
        briefs = keep
    legs = [entry(b.index) for b in briefs]
    if len(dns) > 4 * MAX_LADDER_CONNECTIONS:
        notes.append(f"{len(dns) - 4 * MAX_LADDER_CONNECTIONS} more DNS message(s) not drawn.")
        dns = dns[: 4 * MAX_LADDER_CONNECTIONS]
    events: list[tuple[int, int, Any]] = []  # (time, order, builder args)
    for d in dns:
        events.append((d["ts_ns"], 0, ("dns", d)))
    for c in legs:
        for k, p in enumerate(c["phases"]):
            events.append((p["start_ns"], k + 1, ("phase", c, p)))
    events.sort(key=lambda e: (e[0], e[1]))
    t0 = events[0][0] if events else 0
    arrows: list[Arrow] = []
    seen_head: set[int] = set()
    y = LADDER_TOP + ROW_H
    for ts, _, ev in events:
        rel = _rel(ts - t0)
        if ev[0] == "dns":
            d = ev[1]
            arrows.append(_dns_arrow(d, y, rel))
        else:
            c, p = ev[1], ev[2]
            stream = c["tcp_stream"]
            if stream not in seen_head:
                seen_head.add(stream)
            arrows.append(_phase_arrow(c, p, y, rel, stream in red))
        y += ROW_H
    subtitle = ", ".join(
        f"stream {c['tcp_stream']}: {c['server']['address']}:{c['server']['port']} "
        f"({c['role']}, {OUTCOME_TEXT.get(c['outcome'], c['outcome'].replace('_', ' '))})"
        for c in legs
    )
    return Ladder(
        title=title,
        subtitle=subtitle,
        height=y + 6,
        arrows=arrows,
        notes=notes,
        failed=any(c["tcp_stream"] in red for c in legs),
    )


def _rel(ns: int) -> str:
    return f"+{ns / 1e6:,.3f} ms" if ns < 10_000_000_000 else f"+{ns / 1e9:,.3f} s"


def _dns_arrow(d: dict[str, Any], y: int, rel: str) -> Arrow:
    names = ", ".join(d["names"])
    if not d["response"]:
        return Arrow(y, LANE_X[0], LANE_X[1], f"query {names}", f"#{d['frame']}", rel)
    if d["rcode"] != 0:
        code = {3: "NXDOMAIN", 2: "SERVFAIL", 5: "REFUSED"}.get(d["rcode"], f"rcode {d['rcode']}")
        return Arrow(y, LANE_X[1], LANE_X[0], f"{code} {names}", f"#{d['frame']}", rel, red=True)
    answer = ", ".join(d["cnames"] + d["addresses"]) or "no address"
    return Arrow(y, LANE_X[1], LANE_X[0], f"{names} → {answer}", f"#{d['frame']}", rel)


def _phase_arrow(c: dict[str, Any], p: dict[str, Any], y: int, rel: str, red: bool) -> Arrow:
    cx, sx = LANE_X[0], LANE_X[_lane(c)]
    name = p["name"]
    frames = f"#{p['first_frame']}" + (
        f"\u2013{p['last_frame']}" if p["last_frame"] != p["first_frame"] else ""
    )
    s = c["tcp_stream"]
    tcp = c["tcp"]
    arrow = Arrow(y, cx, sx, "", frames, rel, red=red, both=True, dashed=p["inferred"])
    if name == "tcp_handshake":
        if tcp["synack_frame"] is None:
            n = len(tcp["syn_frames"])
            what = "RST: refused" if tcp["state"] == "REJ" else "no answer"
            arrow.label = f"[{s}] SYN \u00d7{n} to :{c['server']['port']}, {what}"
            arrow.both, arrow.lost, arrow.dashed = False, tcp["state"] != "REJ", True
            arrow.red = True if red or tcp["state"] in ("S0", "REJ") else arrow.red
        else:
            rtt = tcp["handshake_rtt_ns"]
            arrow.label = f"[{s}] TCP handshake :{c['server']['port']}" + (
                f", rtt {rtt / 1e6:.3f} ms" if rtt else ""
            )
    elif name == "prelogin":
        pre = c["tds"]["prelogin"] or {}
        enc = f" enc {pre.get('client_encryption')}/{pre.get('server_encryption')}" if pre else ""
        arrow.label = f"[{s}] PRELOGIN{enc}"
    elif name == "tls":
        tls = c["tls"] or {}
        bits = [tls.get("version") or "TLS"]
        if tls.get("sni"):
            bits.append(f"SNI {tls['sni']}")
        if tls.get("alert"):
            bits.append(f"alert: {tls['alert']}")
            arrow.red = True
        arrow.label = f"[{s}] " + ", ".join(bits)
    elif name == "login":
        lg = c["login"]
        arrow.both, arrow.x1, arrow.x2 = False, cx, sx
        arrow.label = f"[{s}] LOGIN7" + (
            f" {lg['username']} / {lg['database']}" + (" (decrypted)" if lg["decrypted"] else "")
            if lg
            else " (encrypted)"
        )
    elif name in ("login_response", "redirect"):
        resp = c["response"] or {}
        arrow.both, arrow.x1, arrow.x2 = False, sx, cx
        if name == "redirect" and resp.get("routing"):
            rt = resp["routing"]
            arrow.label = f"[{s}] ROUTING \u2192 {rt['server']}:{rt['port']}" + (
                " (decrypted)" if rt.get("decrypted") else ""
            )
        else:
            errors = [m for m in resp.get("messages", []) if m["kind"] == "error"]
            if errors:
                m = errors[0]
                arrow.label = f"[{s}] error {m['number']}: {m['message']}"
                arrow.red = True
            elif resp.get("login_ack"):
                arrow.label = f"[{s}] LOGINACK TDS {resp.get('tds_version') or '?'}"
            else:
                arrow.label = f"[{s}] login response" + (" (encrypted)" if p["inferred"] else "")
    elif name == "data":
        arrow.label = f"[{s}] data, {c['tds']['requests']} request(s)"
    elif name == "close":
        if tcp["rst_frame"] is not None:
            arrow.label = f"[{s}] RST by {tcp['rst_side']}"
            if tcp["rst_side"] == "server":
                arrow.both, arrow.x1, arrow.x2 = False, sx, cx
            else:
                arrow.both = False
        else:
            arrow.label = f"[{s}] FIN"
    if len(arrow.label) > 90:
        arrow.label = arrow.label[:89] + "…"
    return arrow
