"""Summarise expected files as a scenario x driver table (Markdown), for docs and reviews.

python3 -m samples.lab.report [FOLDER]     # default: samples/pcaps
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .scenarios import DRIVERS, SCENARIOS

REPO = Path(__file__).resolve().parent.parent.parent


def cell(doc: dict) -> str:
    v = doc["verdict"]
    text = "ok" if v["result"] == "ok" else v["reason"]
    if v["followed_redirect"] is not None:
        text += " (followed)" if v["followed_redirect"] else " (not followed)"
    tcp = [c for c in doc["connections"] if c["transport"] == "tcp"]
    return f"{text}; {len(tcp)} tcp"


def main(argv: list[str]) -> int:
    folder = Path(argv[0]) if argv else REPO / "samples" / "pcaps"
    docs = {}
    for path in folder.rglob("*__*.json"):
        doc = json.loads(path.read_text())
        docs[(doc["scenario"], doc["driver"]["name"])] = doc
    names = [d.name for d in DRIVERS]
    print("| scenario | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for sc in SCENARIOS:
        row = [cell(docs[(sc.name, n)]) if (sc.name, n) in docs else "-" for n in names]
        print(f"| {sc.name} | " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
