"""Three throw-away network namespaces: client, router, servers — the lab's whole "internet".

``tdl-c`` is the client host (tcpdump runs on its interface); ``tdl-r`` routes between it and
``tdl-s``, and is where the firewall and the lossy link live, as a middlebox would be; ``tdl-s``
carries every server address (DNS, gateway, worker, listener, replica). Nothing leaves the three.
Offloads are switched off so the capture shows real wire-sized (MTU 1500) segments.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

CLIENT_NS, ROUTER_NS, SERVER_NS = "tdl-c", "tdl-r", "tdl-s"
CLIENT_IF, ROUTER_CIF, ROUTER_SIF, SERVER_IF = "tdlc0", "tdlr0", "tdlr1", "tdls0"
CLIENT_IP, ROUTER_CIP = "10.99.0.2", "10.99.0.1"
ROUTER_SIP, SERVER_LINK_IP = "10.99.100.1", "10.99.100.2"
DNS_IP = "10.99.5.53"
GATEWAY_IP = "10.99.1.10"
WORKER_IP = "10.99.2.20"
LISTENER_IP = "10.99.3.30"
REPLICA_IP = "10.99.4.40"
SERVER_IPS = [DNS_IP, GATEWAY_IP, WORKER_IP, LISTENER_IP, REPLICA_IP]
NAMESPACES = (CLIENT_NS, ROUTER_NS, SERVER_NS)


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=check, capture_output=True, text=True, timeout=30)


def in_ns(ns: str, *args: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *args]


def teardown() -> None:
    """Delete the namespaces (which also deletes the veth pairs) and their resolv.conf."""
    for ns in NAMESPACES:
        sh("ip", "netns", "del", ns, check=False)
        with contextlib.suppress(FileNotFoundError):
            (Path("/etc/netns") / ns / "resolv.conf").unlink()
            (Path("/etc/netns") / ns / "hosts").unlink()
            (Path("/etc/netns") / ns).rmdir()


def _link(ns: str, ifc: str, addrs: list[str]) -> None:
    for knob in ("all", "default", ifc):
        sh(*in_ns(ns, "sysctl", "-qw", f"net.ipv6.conf.{knob}.disable_ipv6=1"), check=False)
    sh(*in_ns(ns, "ip", "link", "set", "lo", "up"))
    sh(*in_ns(ns, "ip", "link", "set", ifc, "mtu", "1500"))
    # One segment per skb: what netfilter sees is what the wire carries.
    sh(*in_ns(ns, "ip", "link", "set", "dev", ifc, "gso_max_segs", "1"), check=False)
    for addr in addrs:
        sh(*in_ns(ns, "ip", "addr", "add", addr, "dev", ifc))
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


def setup() -> None:
    teardown()
    for ns in NAMESPACES:
        sh("ip", "netns", "add", ns)
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
        ROUTER_CIF,
        "netns",
        ROUTER_NS,
    )
    sh(
        "ip",
        "link",
        "add",
        ROUTER_SIF,
        "netns",
        ROUTER_NS,
        "type",
        "veth",
        "peer",
        "name",
        SERVER_IF,
        "netns",
        SERVER_NS,
    )
    _link(CLIENT_NS, CLIENT_IF, [f"{CLIENT_IP}/24"])
    _link(ROUTER_NS, ROUTER_CIF, [f"{ROUTER_CIP}/24"])
    _link(ROUTER_NS, ROUTER_SIF, [f"{ROUTER_SIP}/24"])
    _link(SERVER_NS, SERVER_IF, [f"{SERVER_LINK_IP}/24"] + [f"{ip}/32" for ip in SERVER_IPS])
    sh(*in_ns(ROUTER_NS, "sysctl", "-qw", "net.ipv4.ip_forward=1"))
    sh(*in_ns(CLIENT_NS, "ip", "route", "add", "default", "via", ROUTER_CIP))
    sh(*in_ns(SERVER_NS, "ip", "route", "add", "default", "via", ROUTER_SIP))
    for ip in SERVER_IPS:
        sh(*in_ns(ROUTER_NS, "ip", "route", "add", f"{ip}/32", "via", SERVER_LINK_IP))
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


def lossy(percent: int) -> None:
    """Let the router drop about ``percent`` % of the servers' TCP data segments towards the
    client: the client's capture then shows gaps, retransmissions and out-of-order data."""
    if percent <= 0:
        return
    rules = (
        "table inet tdloss {\n"
        "  chain forward { type filter hook forward priority 10; policy accept;\n"
        f"    iifname {ROUTER_SIF} meta l4proto tcp tcp flags & (syn | fin | rst) == 0"
        f" numgen random mod 100 < {percent} counter drop\n"
        "  }\n}\n"
    )
    subprocess.run(
        in_ns(ROUTER_NS, "nft", "-f", "-"),
        input=rules,
        text=True,
        check=True,
        capture_output=True,
        timeout=30,
    )


# --- firewall: nft in the router namespace, recording each client endpoint it acted on -------

NFT_TABLE = "tdlab"


def firewall(rules: list[dict[str, object]]) -> None:
    """Install the router's nft table (a middlebox between client and servers).

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
    lines.append("  chain forward { type filter hook forward priority 0; policy accept;")
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
        in_ns(ROUTER_NS, "nft", "-f", "-"),
        input="\n".join(lines),
        text=True,
        check=True,
        capture_output=True,
        timeout=30,
    )


def _set_elements(name: str) -> list[list[object]]:
    res = sh(*in_ns(ROUTER_NS, "nft", "-j", "list", "set", "inet", NFT_TABLE, name), check=False)
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
