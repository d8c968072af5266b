"""Two throw-away network namespaces joined by one veth pair: the lab's whole "internet".

``tdl-c`` is the client host; ``tdl-s`` carries every server address (DNS, gateway, worker,
listener, replica) on its one interface, so no routing is needed and nothing leaves the machine.
Offloads are switched off so the capture shows real wire-sized (MTU 1500) segments.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

CLIENT_NS, SERVER_NS = "tdl-c", "tdl-s"
CLIENT_IF, SERVER_IF = "tdlc0", "tdls0"
CLIENT_IP = "10.99.0.2"
DNS_IP = "10.99.0.53"
GATEWAY_IP = "10.99.1.10"
WORKER_IP = "10.99.2.20"
LISTENER_IP = "10.99.3.30"
REPLICA_IP = "10.99.4.40"
SERVER_IPS = [DNS_IP, GATEWAY_IP, WORKER_IP, LISTENER_IP, REPLICA_IP]
PREFIX = 16


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=check, capture_output=True, text=True, timeout=30)


def in_ns(ns: str, *args: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *args]


def teardown() -> None:
    """Delete the namespaces (which also deletes the veth pair) and their resolv.conf."""
    for ns in (CLIENT_NS, SERVER_NS):
        sh("ip", "netns", "del", ns, check=False)
        with contextlib.suppress(FileNotFoundError):
            (Path("/etc/netns") / ns / "resolv.conf").unlink()
            (Path("/etc/netns") / ns / "hosts").unlink()
            (Path("/etc/netns") / ns).rmdir()


def setup() -> None:
    teardown()
    sh("ip", "netns", "add", CLIENT_NS)
    sh("ip", "netns", "add", SERVER_NS)
    sh(
        "ip",
        "link",
        "add",
        CLIENT_IF,
        "netns",
        CLIENT_NS,
        "type",
        "veth",
        "peer",
        "name",
        SERVER_IF,
        "netns",
        SERVER_NS,
    )
    for ns, ifc, ips in ((CLIENT_NS, CLIENT_IF, [CLIENT_IP]), (SERVER_NS, SERVER_IF, SERVER_IPS)):
        for knob in ("all", "default", ifc):
            sh(*in_ns(ns, "sysctl", "-qw", f"net.ipv6.conf.{knob}.disable_ipv6=1"), check=False)
        sh(*in_ns(ns, "ip", "link", "set", "lo", "up"))
        sh(*in_ns(ns, "ip", "link", "set", ifc, "mtu", "1500"))
        for ip in ips:
            sh(*in_ns(ns, "ip", "addr", "add", f"{ip}/{PREFIX}", "dev", ifc))
        sh(*in_ns(ns, "ip", "link", "set", ifc, "up"))
        sh(
            *in_ns(
                ns,
                "ethtool",
                "-K",
                ifc,
                "tso",
                "off",
                "gso",
                "off",
                "gro",
                "off",
                "tx",
                "off",
                "rx",
                "off",
            ),
            check=False,
        )
    # `ip netns exec` bind-mounts these over /etc in the client namespace only.
    etc = Path("/etc/netns") / CLIENT_NS
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "resolv.conf").write_text(f"nameserver {DNS_IP}\noptions timeout:2 attempts:2\n")
    (etc / "hosts").write_text("127.0.0.1 localhost\n")


@contextlib.contextmanager
def namespaces() -> Iterator[None]:
    setup()
    try:
        yield
    finally:
        teardown()


# --- firewall: nft in the server namespace, recording each client endpoint it acted on -------

NFT_TABLE = "tdlab"


def firewall(rules: list[dict[str, object]]) -> None:
    """Install the server namespace's nft table.

    Always: set ``seen`` records every SYN's 4-tuple, so the lab knows each TCP connection
    attempt even when no server accepted it. rules: {"daddr", "dport", "verdict": drop | reset};
    set ``hit<i>`` records who each rule acted on.
    """
    lines = [f"table inet {NFT_TABLE} {{"]
    lines.append(
        "  set seen { type ipv4_addr . inet_service . ipv4_addr . inet_service;"
        " flags dynamic; size 65536; }"
    )
    for i, _ in enumerate(rules):
        lines.append(f"  set hit{i} {{ type ipv4_addr . inet_service; flags dynamic; size 4096; }}")
    lines.append("  chain input { type filter hook input priority 0; policy accept;")
    lines.append(
        "    tcp flags & (syn | ack) == syn"
        " add @seen { ip saddr . tcp sport . ip daddr . tcp dport }"
    )
    for i, r in enumerate(rules):
        action = "drop" if r["verdict"] == "drop" else "reject with tcp reset"
        lines.append(
            f"    ip daddr {r['daddr']} tcp dport {r['dport']} tcp flags & (syn | ack) == syn"
            f" add @hit{i} {{ ip saddr . tcp sport }} counter"
        )
        lines.append(f"    ip daddr {r['daddr']} tcp dport {r['dport']} {action}")
    lines += ["  }", "}"]
    subprocess.run(
        in_ns(SERVER_NS, "nft", "-f", "-"),
        input="\n".join(lines),
        text=True,
        check=True,
        capture_output=True,
        timeout=30,
    )


def _set_elements(name: str) -> list[list[object]]:
    res = sh(*in_ns(SERVER_NS, "nft", "-j", "list", "set", "inet", NFT_TABLE, name), check=False)
    found: list[list[object]] = []
    if res.returncode != 0:
        return found
    for item in json.loads(res.stdout)["nftables"]:
        for elem in item.get("set", {}).get("elem", []):
            val = elem.get("elem", {}).get("val", elem) if isinstance(elem, dict) else elem
            concat = val["concat"] if isinstance(val, dict) else val
            found.append([int(x) if isinstance(x, int) or str(x).isdigit() else x for x in concat])
    return found


def syn_seen() -> list[list[object]]:
    """Every TCP connection attempt that reached the server namespace: [cip, cport, sip, sport]."""
    return _set_elements("seen")


def firewall_hits(rules: list[dict[str, object]]) -> list[dict[str, object]]:
    """The client endpoints each rule acted on (from nft's own sets), one entry per rule."""
    return [{**r, "clients": _set_elements(f"hit{i}")} for i, r in enumerate(rules)]
