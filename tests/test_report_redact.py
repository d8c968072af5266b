"""Redaction: no original address or name survives in any redacted output (HTML, JSON, CSV)."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
from test_report_json import VALIDATOR, all_captures
from test_report_synthetic import HOSTILE, build_analysis

from tdslens.analyzer.analysis import analyze
from tdslens.analyzer.model import Analysis
from tdslens.reports.csv_report import write_csv
from tdslens.reports.html import render_html
from tdslens.reports.json_report import to_json
from tdslens.reports.redact import PUBLIC_SUFFIXES, redact
from tdslens.reports.wireshark_profile import write_wireshark_profile

# Fields whose values must not survive (the model's names for addresses and names).
SECRET_FIELDS = {
    "address", "addresses", "target_addresses", "names", "cnames", "sni", "server_name",
    "target_host", "servername", "hostname", "certificate_san", "username", "database",
    "appname", "instance", "path", "server",
}  # fmt: skip
HOST_FIELDS = {"names", "cnames", "sni", "server_name", "target_host", "servername", "hostname",
               "certificate_san", "server"}  # fmt: skip
PUBLIC_WORDS = {s for suffix in PUBLIC_SUFFIXES for s in suffix.split(".")}


def originals(a: Analysis, noise: str = "") -> set[str]:
    """Every name and address in the analysis, plus the customer labels of host names.

    ``noise``: the hostile text the synthetic builder appended to every string (not a secret).
    """
    found: set[str] = set()

    def walk(obj: object, name: str | None) -> None:
        if isinstance(obj, str):
            obj = obj.replace(noise, "") if noise else obj
            if name in SECRET_FIELDS and obj:
                if name == "path":  # the file name; folders like "work" are not secrets
                    found.add(Path(obj).name)
                    return
                found.add(obj)
                if name not in HOST_FIELDS:  # "Microsoft Data Access Components": words
                    return
                for label in re.split(r"[.<>\"'/ (),:]", obj):
                    if len(label) >= 4 and label.lower() not in PUBLIC_WORDS:
                        found.add(label)
        elif isinstance(obj, list | tuple):
            for v in obj:
                walk(v, name)
        elif dataclasses.is_dataclass(obj):
            for f in dataclasses.fields(obj):
                walk(getattr(obj, f.name), f.name)

    walk(a, None)
    generic = {"pcap", "pcapng", "Tedious", "tedious"}
    return {o for o in found if o not in generic and not o.isdigit()}


def outputs(a: Analysis, tmp_path: Path) -> dict[str, str]:
    """Every report rendered from the redacted analysis, as text."""
    r = redact(a)
    files = write_csv(r, tmp_path / "csv")
    profile = write_wireshark_profile(r, tmp_path / "profile")
    return {
        "html": render_html(r),
        "json": json.dumps(to_json(r), ensure_ascii=False),
        **{p.name: p.read_text(encoding="utf-8") for p in files},
        "colorfilters": (profile / "colorfilters").read_text(),
    }


def leaks(a: Analysis, tmp_path: Path, noise: str = "") -> dict[str, list[str]]:
    secrets = originals(a, noise)
    assert secrets
    found: dict[str, list[str]] = {}
    for name, text in outputs(a, tmp_path).items():
        low = text.lower()
        hits = sorted(s for s in secrets if s.lower() in low)
        if hits:
            found[name] = hits[:10]
    return found


def test_synthetic_hostile_analysis_leaks_nothing(tmp_path: Path) -> None:
    text = "".join(HOSTILE)
    a = build_analysis(attempts=3, text=text, path="/cases/contoso-prod/bad.pcap")
    assert not leaks(a, tmp_path, noise=text)


def test_redacted_is_a_field_of_the_analysis() -> None:
    """The reports read ``Analysis.redacted``, not the class of the object they are given."""
    a = build_analysis(attempts=1)
    r = redact(a)
    assert type(r) is Analysis and r.redacted and not a.redacted
    assert to_json(dataclasses.replace(a, redacted=True))["redacted"] is True
    assert to_json(redact(r))["redacted"] is True  # redacting twice stays redacted


def test_pseudonyms_are_stable_and_shared() -> None:
    a = build_analysis(attempts=2)
    one, two = to_json(redact(a)), to_json(redact(a))
    assert one == two  # same input, same pseudonyms
    c0 = one["connections"][0]
    assert one["redacted"] is True and to_json(a)["redacted"] is False
    # the SNI, the DNS question and the attempt's server name are one host, one pseudonym
    assert c0["tls"]["sni"] == one["dns"][0]["names"][0] == one["attempts"][0]["server_name"]
    assert c0["tls"]["sni"].endswith(".database.windows.net")
    assert c0["tls"]["sni"].startswith("host-")
    # the routing target, the redirect and the second leg's DNS answer agree too
    routed = c0["response"]["routing"]["server"]
    assert routed == one["redirects"][0]["target_host"] == one["dns"][2]["names"][0]
    assert c0["server"]["address"] == one["dns"][1]["addresses"][0]
    assert c0["login"]["username"].startswith("user-")
    assert VALIDATOR.is_valid(one) is not False
    assert a.connections[0].client.address == "10.100.0.0"  # the original is untouched


def test_ports_frames_and_times_survive() -> None:
    a = build_analysis()
    plain, red = to_json(a), to_json(redact(a))
    for key in ("tcp_stream", "first_frame", "start_ns", "phases", "tcp", "outcome", "role"):
        assert plain["connections"][1][key] == red["connections"][1][key]
    assert red["connections"][1]["server"]["port"] == 11042


def test_lab_captures_leak_nothing(tmp_path: Path) -> None:
    """One capture per lab scenario (decrypted with its key log when it has one), plus the
    shared real captures: nothing of theirs survives redaction."""
    per_scenario: dict[str, Path] = {}
    for path in all_captures():
        per_scenario.setdefault(path.name.split("__")[0], path)
    if not per_scenario:
        pytest.skip("no captures in this checkout")
    bad = {}
    for i, path in enumerate(per_scenario.values()):
        keys = path.with_suffix(".keys")
        analysis = analyze(path, keylog=keys if keys.exists() else None)
        found = leaks(analysis, tmp_path / str(i))
        if found:
            bad[path.name] = found
    assert not bad
