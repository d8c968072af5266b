"""The scan's ``index.html``: one self-contained page over every capture of a scan.

Like the single-capture report (reports/html.py): inline CSS, no requests, a CSP that allows
only our own inline script (by hash), capture data escaped by Jinja. The script sorts the table
by a column heading click and filters it by a text box; without it the page still reads.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

MAX_TIMELINE_ROWS = 150
TIMELINE_WIDTH = 1000
TIMELINE_LABEL = 260
TIMELINE_ROW = 18

SCRIPT = """(function(){
var t=document.getElementById('captures');if(!t)return;
var b=t.tBodies[0],hs=t.tHead.rows[0].cells,dir={};
function key(r,c,num){var cell=r.cells[c],s=cell.getAttribute('data-v');
if(s===null)s=cell.textContent;
if(!num)return s.toLowerCase();var v=parseFloat(s);return isNaN(v)?-Infinity:v;}
function sortBy(c){var num=hs[c].hasAttribute('data-num'),d=dir[c]=-(dir[c]||-1);
var rs=Array.prototype.slice.call(b.rows).map(function(r,i){return [key(r,c,num),i,r];});
rs.sort(function(x,y){return x[0]<y[0]?-d:x[0]>y[0]?d:x[1]-y[1];});
var f=document.createDocumentFragment();
rs.forEach(function(x){f.appendChild(x[2]);});b.appendChild(f);
for(var h=0;h<hs.length;h++)hs[h].removeAttribute('aria-sort');
hs[c].setAttribute('aria-sort',d>0?'ascending':'descending');}
for(var i=0;i<hs.length;i++){(function(c){hs[c].tabIndex=0;
hs[c].addEventListener('click',function(){sortBy(c);});
hs[c].addEventListener('keydown',function(e){if(e.key==='Enter')sortBy(c);});})(i);}
var q=document.getElementById('filter'),n=document.getElementById('shown');
document.getElementById('filterbox').hidden=false;
q.addEventListener('input',function(){var v=q.value.toLowerCase(),c=0;
for(var i=0;i<b.rows.length;i++){var r=b.rows[i],h=!!v&&r.textContent.toLowerCase().indexOf(v)<0;
r.hidden=h;if(!h)c++;}n.textContent=String(c);});
})();"""
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


@dataclass(slots=True)
class Mark:
    """One failed attempt on the timeline."""

    x: float
    title: str


@dataclass(slots=True)
class Lane:
    """One capture's row on the timeline: its span and its failures."""

    label: str
    link: str | None
    y: int
    x0: float
    x1: float
    marks: list[Mark]


def render_index(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The page for the scan's rows (``scan_index.index_rows``) and its totals (``meta``)."""
    lanes, t0, t1 = _timeline(rows)
    return _ENV.get_template("index.html.j2").render(
        rows=rows,
        meta=meta,
        csp=CSP,
        script=Markup(SCRIPT),  # our constant, never capture data
        lanes=lanes,
        lanes_cut=max(0, sum(1 for r in rows if r.get("failures")) - MAX_TIMELINE_ROWS),
        t0=_time(t0),
        t1=_time(t1),
        width=TIMELINE_WIDTH,
        label_w=TIMELINE_LABEL,
        height=len(lanes) * TIMELINE_ROW + 30,
        row_h=TIMELINE_ROW,
        fmt_size=_fmt_size,
        short_time=_short_time,
    )


def _timeline(rows: list[dict[str, Any]]) -> tuple[list[Lane], int | None, int | None]:
    """Captures with failed attempts, on one shared time axis (absolute UTC)."""
    failing = [r for r in rows if r.get("failures") and r.get("first_ns") is not None]
    failing.sort(key=lambda r: r["first_ns"])
    failing = failing[:MAX_TIMELINE_ROWS]
    if not failing:
        return [], None, None
    t0 = min(r["first_ns"] for r in failing)
    t1 = max(r.get("last_ns") or r["first_ns"] for r in failing)
    span = max(t1 - t0, 1)
    plot = TIMELINE_WIDTH - TIMELINE_LABEL - 10

    def x(ns: int) -> float:
        return round(TIMELINE_LABEL + (ns - t0) / span * plot, 1)

    lanes = []
    for i, r in enumerate(failing):
        marks = [
            Mark(x(f["ns"]), f"{r['capture']}: {f['what']} at {_time(f['ns'])}")
            for f in r["failures"]
            if f.get("ns") is not None
        ]
        lanes.append(
            Lane(
                label=r["capture"],
                link=f"reports/{r['report_id']}.html" if r.get("report_id") else None,
                y=20 + i * TIMELINE_ROW,
                x0=x(r["first_ns"]),
                x1=max(x(r.get("last_ns") or r["first_ns"]), x(r["first_ns"]) + 2),
                marks=marks,
            )
        )
    return lanes, t0, t1


def _time(ns: int | None) -> str:
    if ns is None:
        return ""
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def _short_time(iso: str | None) -> str:
    """``2026-11-23T10:29:45.329197000Z`` -> ``2026-11-23 10:29:45.329`` (sorts the same)."""
    return iso[:23].replace("T", " ") if iso else ""


def _fmt_size(n: int | None) -> str:
    if not n:
        return "0 B"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"
