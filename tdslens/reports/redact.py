"""Redaction: a copy of an Analysis with names and addresses replaced by stable pseudonyms.

Why a copy of the model and not a filter on each output: applied once, before any renderer, it
makes the HTML, JSON, CSV and Wireshark profile redacted alike, and no renderer can forget a
field. Why pseudonyms and not blanks: a support engineer still has to see that the SNI, the
DNS question and the routing target are the *same* host, so equal inputs get equal pseudonyms
within one report (``host-1.database.windows.net`` everywhere), and they are numbered in the
order the analysis lists them, so the same capture always redacts the same way.

What is replaced: IP addresses, host names (DNS questions and answers, SNI, certificate names,
LOGIN7 server and workstation names, routing targets, server names in messages), user, database,
application and instance names, the capture's path and interface names. Well-known public
suffixes (``database.windows.net`` and the like) are kept: they say "Azure SQL", not who the
customer is. Free text (error messages, finding details, reasons) is scrubbed of every original
value seen in those fields and of anything shaped like an IP address or a host name.
"""

from __future__ import annotations

import dataclasses
import re
from enum import Enum
from pathlib import PurePath
from typing import Any

from tdslens.analyzer.model import Analysis

# Public suffixes that identify a service, not a customer (longest first).
PUBLIC_SUFFIXES = tuple(
    sorted(
        (
            "worker.database.windows.net",
            "control.database.windows.net",
            "database.windows.net",
            "database.azure.com",
            "database.chinacloudapi.cn",
            "database.usgovcloudapi.net",
            "database.cloudapi.de",
            "sql.azuresynapse.net",
            "datawarehouse.fabric.microsoft.com",
            "database.fabric.microsoft.com",
        ),
        key=len,
        reverse=True,
    )
)
# Field name → kind of value. Names not listed are free text (scrubbed) or, in KEEP, left alone.
KINDS = {
    "address": "ip",
    "addresses": "ip",
    "target_addresses": "ip",
    "client": "ip",  # Attempt.client is the client's address
    "reporter": "ip",  # IcmpError.reporter: the router or firewall that sent it
    "names": "host",
    "cnames": "host",
    "sni": "host",
    "server_name": "host",
    "target_host": "host",
    "servername": "host",
    "hostname": "host",
    "certificate_san": "host",
    "server": "host",  # RoutingFacts.server, ServerMessageFacts.server
    "username": "user",
    "database": "db",
    "appname": "app",
    "instance": "instance",
    "path": "path",
    "name": "if",  # Interface.name
}
# Fields whose text is structural (versions, codes, flags): scrubbing could only damage them.
KEEP = frozenset(
    {
        "code",
        "kind",
        "what",
        "format",
        "protocol",
        "library",
        "program",
        "history",
        "conn_state",
        "rst_side",
        "side",
        "alert",
        "features",
        "alpn",
        "client_versions",
        "version",
        "tds_version",
        "client_version",
        "server_version",
        "client_encryption",
        "server_encryption",
        "certificate_not_after",
        "result",
        "evidence",
        "outcome",
        "role",
        "severity",
        "reason",
    }
)
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
IPV4 = re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?![\w.]|\.\d)")
IPV6 = re.compile(
    r"(?<![\w:.])(?:[0-9a-f]{1,4}:(?::[0-9a-f]{1,4}){1,6}|(?:[0-9a-f]{1,4}:){1,7}:"
    r"(?:[0-9a-f]{1,4})?|(?:[0-9a-f]{1,4}:){7}[0-9a-f]{1,4}|::(?:[0-9a-f]{1,4}:){0,6}"
    r"[0-9a-f]{1,4})(?![\w:])",
    re.IGNORECASE,
)
HOSTNAME = re.compile(
    r"(?<![\w.@-])(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]*[a-z](?![\w-])",
    re.IGNORECASE,
)
TOKEN = re.compile(r"\w(?:[\w.-]*\w)?")
PSEUDONYM = re.compile(r"^(?:host|ip|ip6|user|db|app|instance|if)-\d+(?:\.|$)")
# Dotted words in free text that are file names or code, not hosts.
NOT_HOST_ENDINGS = (".md", ".py", ".json", ".html", ".txt", ".exe", ".dll", ".log", ".csv", ".j2")


class Pseudonyms:
    """Original → pseudonym, per kind, numbered in first-seen order."""

    def __init__(self) -> None:
        self.maps: dict[str, dict[str, str]] = {}
        self.lookup: dict[str, str] = {}  # lower-cased original text → pseudonym
        self.odd: dict[str, str] = {}  # originals that are not one token (spaces, markup)
        self._odd_sorted: list[tuple[str, str]] = []

    def _remember(self, original: str, pseudonym: str) -> None:
        if not original:
            return
        if TOKEN.fullmatch(original):
            self.lookup[original.lower()] = pseudonym
        else:
            self.odd[original] = pseudonym

    def get(self, kind: str, value: str) -> str:
        if not value:
            return value
        if kind == "host":
            return self._host(value)
        if kind == "ip" and ":" in value and IPV6.fullmatch(value):
            kind = "ip6"
        key = value.lower() if kind in ("user", "db", "app", "instance", "if") else value
        table = self.maps.setdefault(kind, {})
        if key not in table:
            if kind == "path":
                suffixes = "".join(PurePath(value).suffixes[-2:])
                table[key] = f"capture-{len(table) + 1}{suffixes}"
                self._remember(PurePath(value).name, table[key])
            else:
                table[key] = f"{kind}-{len(table) + 1}"
        self._remember(value, table[key])
        return table[key]

    def _host(self, value: str) -> str:
        name = value.rstrip(".")
        low = name.lower()
        if low in PUBLIC_SUFFIXES or _is_pseudonym(low):
            return value
        if IPV4.fullmatch(name) or (":" in name and IPV6.fullmatch(name)):
            return self.get("ip", name)
        suffix = next((s for s in PUBLIC_SUFFIXES if low.endswith("." + s)), None)
        head = low[: -len(suffix) - 1] if suffix else low
        table = self.maps.setdefault("host", {})
        if head not in table:
            table[head] = f"host-{len(table) + 1}"
        out = table[head] + (f".{suffix}" if suffix else "")
        self._remember(value, out)
        self._remember(name, out)
        if suffix:  # the customer part alone may appear in free text ("mysrv")
            self._remember(name[: -len(suffix) - 1], table[head])
        return out

    def scrub(self, text: str) -> str:
        """Free text with every known original and every address or host shape replaced."""
        if not text:
            return text
        if len(self._odd_sorted) != len(self.odd):  # longest first: no partial replacements
            self._odd_sorted = sorted(self.odd.items(), key=lambda kv: len(kv[0]), reverse=True)
        for original, pseudonym in self._odd_sorted:
            if original in text:
                text = text.replace(original, pseudonym)
        text = IPV6.sub(lambda m: self.get("ip", m.group(0)), text)
        return TOKEN.sub(self._token, text)

    def _token(self, m: re.Match[str]) -> str:
        word = m.group(0)
        low = word.lower()
        hit = self.lookup.get(low)
        if hit is not None:
            return hit
        if IPV4.fullmatch(word):
            return self.get("ip", word)
        if HOSTNAME.fullmatch(word) and not low.endswith(NOT_HOST_ENDINGS):
            return self._host(word)
        return word


def _is_pseudonym(low: str) -> bool:
    return bool(PSEUDONYM.match(low))


def redact(analysis: Analysis) -> Analysis:
    """A redacted deep copy of ``analysis`` (``redacted`` set); the original is left untouched.

    Two passes: the first learns every name and address from the fields that hold them (so free
    text anywhere can be scrubbed of all of them), the second builds the copy.
    """
    names = Pseudonyms()
    _walk(analysis, None, names, learn=True)
    fields = {f.name: _walk(getattr(analysis, f.name), f.name, names, learn=False)
              for f in dataclasses.fields(analysis)}  # fmt: skip
    return Analysis(**{**fields, "redacted": True})


def _walk(obj: Any, name: str | None, names: Pseudonyms, learn: bool) -> Any:
    if obj is None or isinstance(obj, bool | int | float | Enum):
        return obj
    if isinstance(obj, str):
        kind = KINDS.get(name or "")
        if kind is not None:
            return names.get(kind, obj)
        if learn or name in KEEP:
            return obj
        return names.scrub(obj)
    if isinstance(obj, list | tuple):
        items = [_walk(v, name, names, learn) for v in obj]
        return items if isinstance(obj, list) else tuple(items)
    if isinstance(obj, dict):
        return {k: _walk(v, str(k), names, learn) for k, v in obj.items()}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changes = {f.name: _walk(getattr(obj, f.name), f.name, names, learn)
                   for f in dataclasses.fields(obj) if f.init}  # fmt: skip
        return obj if learn else dataclasses.replace(obj, **changes)
    return obj
