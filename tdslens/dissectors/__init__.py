"""Sans-IO protocol dissectors: bytes and frame numbers in, events out (docs/dissectors.md)."""

from .dns import DnsTcpDirection, parse_dns
from .session import Phase, TdsDirection
from .tds import looks_like_tds, looks_like_tds8

__all__ = [
    "DnsTcpDirection",
    "Phase",
    "TdsDirection",
    "looks_like_tds",
    "looks_like_tds8",
    "parse_dns",
]
