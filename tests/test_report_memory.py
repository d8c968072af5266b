"""What a big capture keeps in memory must not change what the reports say (issue 9).

A finished connection packs its phases and shares equal values with the connections before it
(analyzer/model.py), and the HTML and CSV reports read the document's items as they are made
(json_report.lazy_json) rather than the whole document. These tests hold each shortcut to the
plain way: the same phases as the list given, the same page and tables from an Analysis as from
its ``to_json`` document.
"""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import pytest
from test_report_json import all_captures
from test_report_synthetic import build_analysis

from tdslens.analyzer.analysis import analyze
from tdslens.analyzer.model import Analysis, Phase, PhaseList, PhaseName
from tdslens.analyzer.tcp_events import Endpoint
from tdslens.reports.csv_report import write_csv
from tdslens.reports.html import MAX_LADDER_CONNECTIONS, MAX_LADDERS, render_html
from tdslens.reports.html import render_html_document as render_document
from tdslens.reports.json_report import ConnectionEntries, Entries, lazy_json, to_json

BIG = 1_795_429_990_881_219_000  # a capture time in ns

PHASES = [
    Phase(PhaseName.TCP_HANDSHAKE, 3, 4, BIG, BIG + 23_000, frames=2),
    Phase(PhaseName.TLS, 10, 12, BIG + 90_000, BIG + 4_000_000, frames=3),
    Phase(PhaseName.LOGIN, 13, 13, BIG + 5_000_000, BIG + 5_000_000, inferred=True),
    Phase(PhaseName.DATA, 2**40, 2**41, 0, 2**62, inferred=True, frames=10**9),
    Phase(PhaseName.CLOSE, 15, 17, BIG + 6_000_000, BIG + 6_000_000),
]


def test_phase_list_reads_back_what_was_packed() -> None:
    packed = PhaseList(PHASES)
    assert list(packed) == PHASES and packed == PHASES and len(packed) == len(PHASES)
    assert [packed[i] for i in range(-len(PHASES), len(PHASES))] == PHASES + PHASES
    assert packed[1:4] == PHASES[1:4] and packed[::-2] == PHASES[::-2]
    assert packed.names == tuple(p.name for p in PHASES)
    assert all(packed.find(p.name) == p for p in PHASES)
    assert packed.find(PhaseName.PRELOGIN) is None
    assert all(type(p.inferred) is bool and type(p.name) is PhaseName for p in packed)
    assert pickle.loads(pickle.dumps(packed)) == packed
    assert PhaseList() == [] and len(PhaseList()) == 0
    with pytest.raises(IndexError):
        packed[len(PHASES)]


def test_a_record_reads_its_phases_as_given() -> None:
    rec = build_analysis(attempts=1).connections[0]
    given = list(rec.phases)
    again = dataclasses.replace(rec, phases=given)
    assert type(again.phases) is PhaseList and list(again.phases) == given
    assert again.reached is PhaseName.REDIRECT is rec.reached
    assert again.phase(PhaseName.LOGIN_RESPONSE) == next(
        p for p in given if p.name is PhaseName.LOGIN_RESPONSE
    )
    assert dataclasses.replace(rec, phases=[]).reached is None


def test_records_share_equal_values() -> None:
    """Equal server endpoints and strings are one object across a capture's connections."""
    conns = build_analysis(attempts=3).connections
    gateways = [c for c in conns if c.server.port == 1433]
    assert len(gateways) == 3 and all(c.server is gateways[0].server for c in gateways)
    assert all(c.tcp.server is c.server for c in conns)
    rec = next(c for c in conns if c.tls is not None)
    tls = [dataclasses.replace(rec.tls, version="".join(["TLS 1.", "2"])) for _ in range(2)]
    again = [dataclasses.replace(rec, tls=t) for t in tls]
    assert again[0].tls.version == "TLS 1.2" and again[0].tls.version is again[1].tls.version
    assert all(type(c.problems) is tuple and type(c.tls.alpn) is tuple for c in again)
    routed = next(c for c in conns if c.response is not None and c.response.messages)
    m = routed.response.messages[0]
    assert m.number > 256  # not one of CPython's cached small ints

    def rebuilt() -> int:
        copy = dataclasses.replace(m, number=int(str(m.number)))  # equal, not the same int
        resp = dataclasses.replace(routed.response, messages=[copy])
        return dataclasses.replace(routed, response=resp).response.messages[0].number

    first, second = rebuilt(), rebuilt()
    assert first == m.number and first is second


def _same_page(a: Analysis) -> None:
    assert render_html(a) == render_document(to_json(a))


@pytest.mark.parametrize("path", all_captures(), ids=lambda p: p.name)
def test_page_from_the_analysis_is_the_page_of_its_document(path: Path) -> None:
    keys = path.with_suffix(".keys")
    _same_page(analyze(path, keylog=keys if keys.exists() else None))


def test_page_from_the_analysis_with_more_groups_than_ladders() -> None:
    a = build_analysis(attempts=MAX_LADDERS + 6)
    _same_page(a)
    # and without correlation: one ladder per client, here one client with many legs
    one = [dataclasses.replace(c, client=Endpoint("10.1.1.1", 50000 + c.stream))
           for c in a.connections]  # fmt: skip
    bare = Analysis(a.capture, a.frames, a.problems, one, a.dns)
    assert len(one) > MAX_LADDER_CONNECTIONS
    _same_page(bare)
    _same_page(Analysis(a.capture, a.frames, a.problems, a.connections, a.dns))


@pytest.mark.parametrize("path", all_captures()[::4], ids=lambda p: p.name)
def test_csv_from_the_analysis_is_the_csv_of_its_document(path: Path, tmp_path: Path) -> None:
    a = analyze(path)
    lazy = write_csv(a, tmp_path / "lazy")
    listed = write_csv(to_json(a), tmp_path / "listed")
    assert [p.read_bytes() for p in lazy] == [p.read_bytes() for p in listed]


def test_lazy_entries_are_the_documents() -> None:
    a = build_analysis(attempts=3)
    lazy, listed = lazy_json(a), to_json(a)
    assert isinstance(lazy["connections"], ConnectionEntries)
    assert lazy.keys() == listed.keys()
    for key, value in lazy.items():
        if not isinstance(value, Entries):
            assert value == listed[key]
            continue
        assert len(value) == len(listed[key]) and list(value) == listed[key], key
        assert [value[i] for i in range(-len(value), len(value))] == listed[key] * 2
        assert value[1:] == listed[key][1:] and value[:-1] == listed[key][:-1]
