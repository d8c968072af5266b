"""Per connection: drive the TDS dissectors and label how far the conversation got.

The phases of a TDS connection are the diagnosis: a connection that stops after PRELOGIN, inside
the TLS handshake or right after LOGIN7 says what failed. `ConnectionDissector` receives one
connection's TCP events (from `analyzer/tcp.py`), feeds each direction to a sans-IO
`TdsDirection`, and folds the protocol events into facts (`analyzer/model.py`) and a phase list:

    TCP handshake → PRELOGIN → TLS → LOGIN → login response → redirect | data → close

TDS is recognised by content, not port (a PRELOGIN at the start of the client's stream, or a TLS
ClientHello offering ALPN ``tds/8.0``), so worker legs on 11000-11999 are seen like the rest.
When TLS hides the login (Azure SQL always encrypts it), the phases after the handshake are
inferred from the order of encrypted flights and marked ``inferred``.

With a key log (``secrets``), every TLS record of both directions also goes, in wire order, to
one ``TlsDecryptor`` per connection (the TLS dissector's record hook). The plaintext feeds a
second, inner ``TdsDirection`` per direction whose events fold through the same ``_classify``:
LOGIN7, LOGINACK, routing and errors land in the same facts, marked ``decrypted``, and their
phases are decoded, not inferred. Records left encrypted are collapsed per reason into
``ConnectionRecord.decryption``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tdslens.analyzer.model import (
    MAX_UNDECRYPTED_FRAMES,
    ConnectionRecord,
    DecryptionFacts,
    LoginFacts,
    LoginResponseFacts,
    Phase,
    PhaseName,
    PreloginFacts,
    Problem,
    RoutingFacts,
    ServerMessageFacts,
    TlsFacts,
    UndecryptedFacts,
)
from tdslens.analyzer.tcp_events import (
    ConnectionSummary,
    Gap,
    Payload,
    QuietCount,
    StreamStart,
)
from tdslens.dissectors import events as ev
from tdslens.dissectors.events import members
from tdslens.dissectors.login7 import tds_version_name
from tdslens.dissectors.session import TdsDirection
from tdslens.dissectors.tds import (
    header_plausible,
    looks_like_tds,
    looks_like_tds8,
    tls_record_plausible,
)
from tdslens.dissectors.tls import parse_certificate
from tdslens.dissectors.tls_decrypt import (
    APPLICATION_DATA,
    TLS1_3,
    CannotDecrypt,
    DecryptedAlert,
    DecryptedData,
    DecryptedHandshake,
    DecryptResult,
    SecretSource,
    TlsDecryptor,
)

SNIFF_BYTES = 512  # client bytes kept to decide whether a stream is TDS
RECENT_FRAMES = 256  # frame → time entries kept per connection, to time events
TLS_HANDSHAKE_RECORD = 22  # TLS content type of handshake records
CLOSE_NOTIFY = 0  # TLS alert description
TLS_CERTIFICATE = 11  # TLS handshake message type

TLS_VERSIONS = {
    0x0300: "SSL 3.0",
    0x0301: "TLS 1.0",
    0x0302: "TLS 1.1",
    0x0303: "TLS 1.2",
    0x0304: "TLS 1.3",
}
TLS_ALERTS = {
    0: "close_notify",
    10: "unexpected_message",
    20: "bad_record_mac",
    40: "handshake_failure",
    42: "bad_certificate",
    43: "unsupported_certificate",
    44: "certificate_revoked",
    45: "certificate_expired",
    46: "certificate_unknown",
    47: "illegal_parameter",
    48: "unknown_ca",
    50: "decode_error",
    51: "decrypt_error",
    70: "protocol_version",
    71: "insufficient_security",
    80: "internal_error",
    86: "inappropriate_fallback",
    90: "user_canceled",
    109: "missing_extension",
    110: "unsupported_extension",
    112: "unrecognized_name",
    116: "certificate_required",
    120: "no_application_protocol",
}
ENCRYPTION_NAMES = {
    0x00: "off",
    0x01: "on",
    0x02: "not_sup",
    0x03: "req",
    0x80: "off+client_cert",
    0x81: "on+client_cert",
    0x83: "req+client_cert",
}
# Server tokens that answer a login (before the login response ends).
_RESPONSE_TOKENS = (
    ev.LoginAck,
    ev.EnvChange,
    ev.EnvChangeRouting,
    ev.ServerMessage,
    ev.Done,
    ev.FeatureExtAck,
    ev.FedAuthInfo,
    ev.Token,
    ev.Sspi,
)
_TLS_EVENTS = (
    ev.ClientHello,
    ev.ServerHello,
    ev.Certificate,
    ev.TlsHandshake,
    ev.ChangeCipherSpec,
    ev.TlsAlert,
    ev.TlsRecord,
)
_PROBLEM_EVENTS = (ev.Malformed, ev.CannotContinue, ev.ProtocolViolation, ev.Resync)
_PHASE_ORDER = {name: i for i, name in enumerate(PhaseName)}
_PHASE = members(PhaseName)  # plain attributes: faster lookups (events.members)
_CARRIER, _ENV = members(ev.TlsCarrier), members(ev.EnvChangeType)


def tls_version_name(version: int) -> str:
    return TLS_VERSIONS.get(version, f"0x{version:04x}")


def _version_text(v: tuple[int, int, int, int] | None) -> str | None:
    return None if v is None else ".".join(str(x) for x in v)


@dataclass(slots=True)
class _PhaseSpan:
    first_frame: int
    last_frame: int
    start_ns: int
    end_ns: int
    inferred: bool
    frames: set[int] = field(default_factory=set)
    counted: int = 0  # frames counted, not collected (an established session's tail)


@dataclass(slots=True)
class _Tail:
    """An established session from here on: payloads are counted, not dissected.

    Once the login is answered and data has gone both ways, nothing later changes a diagnosis;
    dissecting the rest of a long session only costs time, and remembering its frames memory.
    Each later payload frame extends the data phase; each run of client payloads after server
    payloads is one more request (the same rule as encrypted flights).
    """

    frames: int = 0
    last_frame: int = 0
    last_ns: int = 0
    last_side: bool | None = None
    requests: int = 0

    def merge(self, later: QuietCount) -> None:
        """Add what the TCP engine counted after this tail's payloads, as if counted here."""
        if not later.frames:
            return
        self.requests += later.requests
        if later.first_from_client and self.last_side is False:
            self.requests += 1
        self.frames += later.frames
        self.last_frame, self.last_ns = later.last_frame, later.last_ts_ns
        self.last_side = later.last_from_client


class ConnectionDissector:
    """Everything tdslens learns about one TCP connection, built from its TCP events."""

    def __init__(
        self,
        start: StreamStart,
        secrets: SecretSource | None = None,
        skip_unread: bool = True,
        on_established: Callable[[int], None] | None = None,
    ) -> None:
        """``secrets``: a key log to decrypt TLS with; None (the usual case) decrypts nothing.
        ``skip_unread``: pass over the bodies no fact comes from (``TdsDirection``).
        ``on_established(stream)``: called once when the session is established and its
        payload is only counted from then on (``TcpEngine.quiet`` fits: the engine can count
        it, see ``finish``)."""
        self.start = start
        self._on_established = on_established
        self._skip_unread = skip_unread
        self._secrets = secrets
        self._decryptor: TlsDecryptor | None = None
        self._inner: dict[bool, TdsDirection] = {}  # plaintext of each direction, as TDS
        self._results: list[DecryptResult] = []  # decryptor output not folded yet
        self._opened: set[tuple[bool, tuple[int, ...]]] = set()  # records that decrypted
        self._inner_fed = {True: False, False: False}  # plaintext reached the inner direction
        self._decrypted = 0
        self._undecrypted: dict[str, UndecryptedFacts] = {}
        self._decrypting = False  # folding inner (decrypted) events now
        self.protocol = "none"  # "tds", "tds8", "other" once decided; "none" without payload
        self._sniff = bytearray()
        self._held: list[Payload] = []  # payloads waiting for the TDS decision
        self._dirs: dict[bool, TdsDirection] = {}
        self._times: OrderedDict[int, int] = OrderedDict()
        self._spans: dict[PhaseName, _PhaseSpan] = {}
        self.prelogin: PreloginFacts | None = None
        self.tls: TlsFacts | None = None
        self.login: LoginFacts | None = None
        self.response: LoginResponseFacts | None = None
        self.requests = 0
        self.problems: list[Problem] = []
        # Encrypted-flight bookkeeping: which side sent the last raw TLS data, and how many
        # flights each side has sent since the handshake ended.
        self._last_flight_side: bool | None = None
        self._flights = {True: 0, False: 0}
        self._response_done = False
        self._data_sides = {True: False, False: False}  # each side sent data after the login
        self._tail: _Tail | None = None
        self._ccs = {True: False, False: False}  # ChangeCipherSpec seen, per side (TLS 1.2)
        self._client_finished = False  # TLS 1.3: the client's encrypted Finished went by

    # -- TCP events in -----------------------------------------------------------------------

    def on_payload(self, p: Payload) -> None:
        tail = self._tail
        if tail is not None:  # the hot path of a busy capture: count and move on
            tail.frames += 1
            tail.last_frame, tail.last_ns = p.frame, p.ts_ns
            if p.from_client and tail.last_side is False:
                tail.requests += 1
            tail.last_side = p.from_client
            return
        if self.protocol == "other":
            return  # not TDS: nothing here is read
        times = self._times  # the recent frames' times, to time the phases by
        times[p.frame] = p.ts_ns
        if len(times) > RECENT_FRAMES:
            times.popitem(last=False)
        if self.protocol == "none":
            self._held.append(
                Payload(p.stream, p.from_client, p.offset, bytes(p.data), p.frame, p.ts_ns)
            )
            if p.from_client:
                self._sniff += bytes(p.data[: SNIFF_BYTES - len(self._sniff)])
            self._decide(final=False)
            return
        if self.protocol in ("tds", "tds8"):
            side = p.from_client
            self._fold(self._dirs[side].feed(p.data, p.frame), side)
            if self._results:
                self._drain()
            if self._data_sides[True] and self._data_sides[False]:
                self._tail = _Tail(last_side=side)
                if self._on_established is not None:
                    self._on_established(p.stream)

    def on_gap(self, g: Gap) -> None:
        if self._tail is not None:
            return  # the session was established; a hole in its data changes nothing
        if self.protocol == "none":
            self._decide(final=True)
        if self.protocol in ("tds", "tds8"):
            if self._decryptor is not None:
                self._decryptor.gap(g.from_client)
            self._fold(self._dirs[g.from_client].gap(g.length, g.frame), g.from_client)
            self._drain()

    def finish(
        self, summary: ConnectionSummary, quiet: QuietCount | None = None
    ) -> ConnectionRecord:
        """The connection ended: flush the dissectors and build its record. ``quiet``: the
        payload the TCP engine counted after ``on_established`` (``StreamEnd.quiet``)."""
        if self.protocol == "none" and self._held:
            self._decide(final=True)
        if self._tail is not None:
            if quiet is not None:
                self._tail.merge(quiet)
            self._end_tail(self._tail)
        elif self.protocol in ("tds", "tds8"):
            for side, direction in self._dirs.items():
                self._fold(direction.eof(), side)
            self._drain()
            for side, direction in self._inner.items():
                if self._inner_fed[side]:
                    self._fold_decrypted(direction.eof(), side)
        return ConnectionRecord(
            stream=summary.stream,
            client=summary.client,
            server=summary.server,
            tcp=summary,
            protocol=self.protocol,
            phases=self._phases(summary),
            prelogin=self.prelogin,
            tls=self.tls,
            login=self.login,
            response=self.response,
            requests=self.requests,
            problems=self.problems,
            decryption=self._decryption_facts(),
        )

    def _end_tail(self, tail: _Tail) -> None:
        """Fold what the established session's tail counted into the data phase."""
        self.requests += tail.requests
        span = self._spans.get(_PHASE.DATA)
        if span is None:  # cannot happen: the tail begins after data went both ways
            return
        span.counted += tail.frames
        if tail.frames and tail.last_frame > span.last_frame:
            span.last_frame, span.end_ns = tail.last_frame, tail.last_ns

    # -- deciding whether this is TDS --------------------------------------------------------

    def _decide(self, final: bool) -> None:
        sniff = bytes(self._sniff)
        if looks_like_tds8(sniff):
            self.protocol = "tds8"
        elif looks_like_tds(sniff) or self._mid_stream_tds():
            self.protocol = "tds"
        elif final or len(sniff) >= SNIFF_BYTES or self._server_spoke_first():
            self.protocol = "other"
        else:
            return
        held, self._held, self._sniff = self._held, [], bytearray()
        if self.protocol == "other":
            self._note_tls_without_handshake(sniff, held)
            return
        hook = None
        if self._secrets is not None:
            self._decryptor = TlsDecryptor(self._secrets)
            self._inner = {
                side: TdsDirection(from_client=side, skip_unread=self._skip_unread)
                for side in (True, False)
            }
            hook = self._on_tls_record
        self._dirs = {
            side: TdsDirection(side, on_tls_record=hook, skip_unread=self._skip_unread)
            for side in (True, False)
        }
        for p in held:
            self._fold(self._dirs[p.from_client].feed(p.data, p.frame), p.from_client)
            self._drain()

    def _note_tls_without_handshake(self, sniff: bytes, held: list[Payload]) -> None:
        """A client whose first bytes are TLS application data (or an alert) has no handshake
        on this connection: seen when a driver carries a TLS session over from the gateway leg
        to the worker leg. No TLS protocol starts that way, so it is worth a problem."""
        if tls_record_plausible(sniff) and sniff[0] != TLS_HANDSHAKE_RECORD:
            frames = [p.frame for p in held if p.from_client][:1]
            self.problems.append(
                Problem(
                    "TLS without handshake",
                    "the client's first bytes are an encrypted TLS record (content type "
                    f"{sniff[0]}) with no TLS handshake on this connection",
                    frames,
                )
            )

    def _server_spoke_first(self) -> bool:
        """A TDS client always speaks first; a server that does is another protocol."""
        return self.start.saw_syn and any(not p.from_client for p in self._held) and not self._sniff

    def _mid_stream_tds(self) -> bool:
        """A capture that starts inside a session: accept a plausible TDS header on a SQL port."""
        if self.start.saw_syn or not self._sniff:
            return False
        return header_plausible(bytes(self._sniff)) and self._sniff[0] in (1, 3, 4, 6, 7, 14, 16)

    # -- decryption (only with a key log) ----------------------------------------------------

    def _on_tls_record(
        self, from_client: bool, ctype: int, version: int, fragment: bytes, frames: tuple[int, ...]
    ) -> None:
        """The TLS dissectors' record hook: both directions, in wire order, to one decryptor.
        Results wait in ``_results`` until the outer events of the same bytes are folded."""
        assert self._decryptor is not None
        results = self._decryptor.feed(from_client, ctype, version, fragment, frames)
        if any(isinstance(r, DecryptedData | DecryptedHandshake | DecryptedAlert) for r in results):
            self._opened.add((from_client, tuple(frames)))
        self._results += results

    def _drain(self) -> None:
        """Fold what the decryptor produced: plaintext into the inner TDS directions."""
        if not self._results:
            return  # always so without a key log; ``_opened`` fills only with results
        results, self._results = self._results, []
        self._opened.clear()
        for r in results:
            side = r.from_client
            if isinstance(r, DecryptedData):
                self._decrypted += 1
                self._tls().handshake_complete = True
                self._inner_fed[side] = True
                self._fold_decrypted(self._inner[side].feed(r.data, r.frames[-1]), side)
            elif isinstance(r, DecryptedHandshake):
                self._decrypted += 1
                if r.msg_type == TLS_CERTIFICATE and not side:
                    self._tls13_certificate(r.body)
                self._mark(_PHASE.TLS, r.frames, inferred=False)
            elif isinstance(r, DecryptedAlert):
                self._decrypted += 1
                if r.description != CLOSE_NOTIFY:  # the normal end of a session, not a failure
                    self._alert(r.level, r.description, side, r.frames)
                self._mark(_PHASE.TLS, r.frames, inferred=False)
            elif isinstance(r, CannotDecrypt):
                self._cannot(r)

    def _tls13_certificate(self, body: bytes) -> None:
        """TLS 1.3 encrypts the server certificate; decrypted, it fills the facts TLS 1.2 shows
        in clear. RFC 8446 4.4.2: context, then entries of (cert_data, extensions)."""
        assert self._decryptor is not None
        tls = self._tls()
        if self._decryptor.version != TLS1_3 or tls.certificate_subject is not None:
            return
        pos = 1 + body[0] + 3 if body else 0
        n = int.from_bytes(body[pos : pos + 3], "big")
        der = body[pos + 3 : pos + 3 + n]
        if not n or len(der) != n:
            return  # a short or empty certificate message: nothing to show
        leaf = parse_certificate((n + 3).to_bytes(3, "big") + n.to_bytes(3, "big") + der)
        tls.certificate_subject = leaf["subject"]
        tls.certificate_issuer = leaf["issuer"]
        tls.certificate_san = list(leaf["san"])
        tls.certificate_not_after = leaf["not_after"]

    def _cannot(self, r: CannotDecrypt) -> None:
        """Collapse per reason; a hole in plaintext already flowing is a gap for the inner TDS."""
        entry = self._undecrypted.get(r.reason)
        if entry is None:
            entry = self._undecrypted[r.reason] = UndecryptedFacts(str(r.reason), r.detail, 0, [])
        entry.records += 1
        for f in r.frames:
            if len(entry.frames) < MAX_UNDECRYPTED_FRAMES and f not in entry.frames:
                entry.frames.append(f)
        side = r.from_client
        if self._inner_fed[side] and r.content_type == APPLICATION_DATA:
            frame = r.frames[-1] if r.frames else 0
            self._fold_decrypted(self._inner[side].gap(max(r.length, 1), frame), side)

    def _decryption_facts(self) -> DecryptionFacts | None:
        dec = self._decryptor
        if dec is None or (dec.client_random is None and not self._undecrypted):
            return None  # no TLS on this connection: nothing to say about decryption
        return DecryptionFacts(
            keys_found=dec.keys_found,
            version=None if dec.version is None else tls_version_name(dec.version),
            cipher_suite=dec.suite_name,
            records_decrypted=self._decrypted,
            undecrypted=[
                UndecryptedFacts(u.reason, u.detail, u.records, sorted(u.frames))
                for u in self._undecrypted.values()
            ],
        )

    # -- folding protocol events into facts and phases ---------------------------------------

    def _fold(self, events: list[ev.Event], from_client: bool) -> None:
        marked: PhaseName | None = None  # the last mark made: phase, frames, inferred
        marked_frames: tuple[int, ...] = ()
        marked_inferred = False
        for e in events:
            kind = type(e)
            if kind is ev.TdsPacket and not self._response_done:
                continue  # a packet header tells nothing until the login is answered
            encrypted = kind is ev.EncryptedData
            if encrypted and self._opened and (from_client, e.frames) in self._opened:
                continue  # decrypted: the inner dissector says exactly what it was
            handler = _CLASSIFY.get(kind) or self._handler(kind)  # _classify, inline
            phase = handler(self, e, from_client)
            if phase is None:
                continue
            frames = e.frames
            if phase is marked and frames == marked_frames and encrypted is marked_inferred:
                continue  # the tokens of one packet mark the same frames: once is enough
            marked, marked_frames, marked_inferred = phase, frames, encrypted
            self._mark(phase, frames, inferred=encrypted)
            if phase is _PHASE.DATA:
                self._data_sides[from_client] = True

    def _fold_decrypted(self, events: list[ev.Event], from_client: bool) -> None:
        """Inner events: the same facts, marked decrypted; their phases are not inferred."""
        self._decrypting = True
        try:
            for e in events:
                if isinstance(e, ev.Gap):
                    continue
                phase = self._classify(e, from_client)
                if phase is not None:
                    self._mark(phase, e.frames, inferred=False)
                    if phase is _PHASE.DATA:
                        self._data_sides[from_client] = True
        finally:
            self._decrypting = False

    def _classify(self, e: ev.Event, from_client: bool) -> PhaseName | None:
        """Record the facts an event carries and say which phase it belongs to.

        One handler per event class (``_CLASSIFY``), found by the event's type: a login yields
        ~30 events, and a chain of isinstance tests per event cost more than the facts."""
        kind = type(e)
        return (_CLASSIFY.get(kind) or self._handler(kind))(self, e, from_client)

    @staticmethod
    def _handler(kind: type) -> _Handler:
        """The handler of an event class not met yet: its nearest listed base's, else none."""
        for base in kind.__mro__[1:]:
            if base in _CLASSIFY:
                handler = _CLASSIFY[kind] = _CLASSIFY[base]
                return handler
        handler = _CLASSIFY[kind] = ConnectionDissector._on_other
        return handler

    def _on_packet(self, e: ev.TdsPacket, from_client: bool) -> PhaseName | None:
        """The frames of data whose tokens are no longer read."""
        return _PHASE.DATA if self._response_done else None

    def _on_prelogin(self, e: ev.PreLogin, from_client: bool) -> PhaseName:
        self._prelogin(e)
        return _PHASE.PRELOGIN

    def _on_tls(self, e: ev.Event, from_client: bool) -> PhaseName:
        """A TLS handshake message or record that carries no fact of its own."""
        self._tls()
        return _PHASE.TLS

    def _on_client_hello(self, e: ev.ClientHello, from_client: bool) -> PhaseName:
        tls = self._tls()
        versions = e.supported_versions or (e.legacy_version,)
        tls.client_versions = [tls_version_name(v) for v in versions]
        tls.sni = e.sni
        tls.alpn = list(e.alpn)
        return _PHASE.TLS

    def _on_server_hello(self, e: ev.ServerHello, from_client: bool) -> PhaseName:
        tls = self._tls()
        tls.version = tls_version_name(e.selected_version)
        tls.cipher_suite = e.cipher_suite
        return _PHASE.TLS

    def _on_certificate(self, e: ev.Certificate, from_client: bool) -> PhaseName:
        tls = self._tls()
        tls.certificate_subject = e.subject
        tls.certificate_issuer = e.issuer
        tls.certificate_san = list(e.san)
        tls.certificate_not_after = e.not_after
        return _PHASE.TLS

    def _on_change_cipher_spec(self, e: ev.ChangeCipherSpec, from_client: bool) -> PhaseName:
        tls = self._tls()
        self._ccs[from_client] = True
        if self._ccs[True] and self._ccs[False]:
            tls.handshake_complete = True
        return _PHASE.TLS

    def _on_alert(self, e: ev.TlsAlert, from_client: bool) -> PhaseName:
        self._tls()
        if e.level is not None:
            self._alert(e.level, e.description or 0, from_client, e.frames)
        return _PHASE.TLS

    def _on_login7(self, e: ev.Login7, from_client: bool) -> PhaseName:
        self.login = _login_facts(e)
        self.login.decrypted = self._decrypting
        # The server's token layouts depend on the TDS version; without a LOGINACK (failed
        # login) the client's LOGIN7 is the only place to learn it.
        self._dirs[False].hint_tds_version(e.tds_version)
        if self._inner:
            self._inner[False].hint_tds_version(e.tds_version)
        return _PHASE.LOGIN

    def _on_login_leg(self, e: ev.Event, from_client: bool) -> PhaseName:
        """A federated-authentication token, or the client's SSPI message."""
        return _PHASE.LOGIN if not self._response_done else _PHASE.DATA

    def _on_sspi(self, e: ev.Sspi, from_client: bool) -> PhaseName | None:
        if e.from_client:
            return self._on_login_leg(e, from_client)
        return self._on_response_token(e, from_client)

    def _on_request(self, e: ev.Event, from_client: bool) -> PhaseName:
        self.requests += 1
        return _PHASE.DATA

    def _on_response_token(self, e: ev.Event, from_client: bool) -> PhaseName:
        """A server token: it answers the login until the login response ends."""
        if from_client or self._response_done:
            return _PHASE.DATA
        self._response_token(e)
        if isinstance(e, ev.EnvChangeRouting):
            self._mark(_PHASE.REDIRECT, e.frames, inferred=False)
        return _PHASE.LOGIN_RESPONSE

    def _on_end_of_response(self, e: ev.EndOfResponse, from_client: bool) -> PhaseName:
        if self._response_done or self.response is None:
            return _PHASE.DATA
        self._response_done = True
        # The login is answered: tdslens reads no result tokens after it.
        self._dirs[False].stop_reading_tokens()
        if self._inner:
            self._inner[False].stop_reading_tokens()
        return _PHASE.LOGIN_RESPONSE

    def _on_data(self, e: ev.Event, from_client: bool) -> PhaseName:
        return _PHASE.DATA

    def _on_problem(self, e: ev.Event, from_client: bool) -> None:
        self.problems.append(Problem(type(e).__name__, _problem_detail(e), list(e.frames)))

    def _on_other(self, e: ev.Event, from_client: bool) -> None:
        return None

    def _prelogin(self, e: ev.PreLogin) -> None:
        facts = self.prelogin or PreloginFacts()
        enc = (
            None
            if e.encryption is None
            else ENCRYPTION_NAMES.get(e.encryption, f"0x{e.encryption:02x}")
        )
        if e.from_client:
            facts.client_version = _version_text(e.version)
            facts.client_encryption = enc
            facts.instance = e.instance
            facts.mars = e.mars
        else:
            facts.server_version = _version_text(e.version)
            facts.server_encryption = enc
            facts.fedauth_required = e.fedauth_required
        facts.frames.extend(e.frames)
        facts.decrypted = facts.decrypted or self._decrypting
        self.prelogin = facts

    def _tls(self) -> TlsFacts:
        if self.tls is None:
            self.tls = TlsFacts(carried_in_tds=self.protocol != "tds8")
        return self.tls

    def _alert(self, level: int, description: int, from_client: bool, frames) -> None:
        """The first alert with a readable level (in clear, or decrypted) names the failure."""
        tls = self._tls()
        if tls.alert is not None:
            return
        level_name = {1: "warning", 2: "fatal"}.get(level, str(level))
        name = TLS_ALERTS.get(description, str(description))
        tls.alert = f"{level_name} {name} from {'client' if from_client else 'server'}"
        tls.alert_frame = frames[-1] if frames else None

    def _encrypted(self, e: ev.EncryptedData, from_client: bool) -> PhaseName:
        """Phase of encrypted data: TLS while the handshake runs, then by flight order.

        TDS 7.x: the client's first flight after the handshake is LOGIN7, the server's answer
        the login response, the rest data. TDS 8.0: PRELOGIN travels inside TLS first.
        """
        tls = self._tls()
        if e.carrier == _CARRIER.TDS:
            return _PHASE.TLS  # TLS 1.3 encrypted handshake inside PRELOGIN packets
        if not tls.handshake_complete and not self._handshake_over(from_client):
            return _PHASE.TLS
        tls.handshake_complete = True
        if self._last_flight_side is not from_client:
            self._flights[from_client] += 1
            self._last_flight_side = from_client
        n = self._flights[from_client]
        if self.protocol == "tds8":
            order = (
                [_PHASE.PRELOGIN, _PHASE.LOGIN]
                if from_client
                else [_PHASE.PRELOGIN, _PHASE.LOGIN_RESPONSE]
            )
        else:
            order = [_PHASE.LOGIN] if from_client else [_PHASE.LOGIN_RESPONSE]
        if self.login is not None and from_client:  # LOGIN7 was in clear: this is data
            return _PHASE.DATA
        if from_client and n > len(order):
            self.requests += 1
        return order[n - 1] if n <= len(order) else _PHASE.DATA

    def _handshake_over(self, from_client: bool) -> bool:
        """TLS 1.3 hides its last handshake messages: the client's first encrypted record after
        the ServerHello ends the handshake (its Finished). TLS 1.2 ends with both
        ChangeCipherSpecs."""
        if self._tls().version != "TLS 1.3":
            return False
        if from_client and not self._client_finished:
            self._client_finished = True  # this record is the client's Finished
            return False
        return self._client_finished

    def _response_token(self, e: ev.Event) -> None:
        r = self.response or LoginResponseFacts()
        self.response = r
        r.decrypted = r.decrypted or self._decrypting
        if isinstance(e, ev.LoginAck):
            r.login_ack = True
            r.tds_version = tds_version_name(e.tds_version)
            r.program = f"{e.prog_name} {'.'.join(str(x) for x in e.prog_version)}".strip()
        elif isinstance(e, ev.EnvChangeRouting):
            r.routing = RoutingFacts(e.server, e.port, e.protocol, e.frames[-1], self._decrypting)
        elif isinstance(e, ev.EnvChange):
            if e.type == _ENV.DATABASE:
                r.database = e.new
            elif e.type == _ENV.PACKET_SIZE and e.new.isdigit():
                r.packet_size = int(e.new)
        elif isinstance(e, ev.ServerMessage):
            r.messages.append(
                ServerMessageFacts(
                    "error" if isinstance(e, ev.Error) else "info",
                    e.number,
                    e.state,
                    e.severity,
                    e.message,
                    e.server,
                    e.frames[-1] if e.frames else 0,
                )
            )

    # -- phases ------------------------------------------------------------------------------

    def _mark(self, name: PhaseName, frames: tuple[int, ...], inferred: bool) -> None:
        if not frames:
            return
        if len(frames) == 1:
            first = last = frames[0]
        else:
            first, last = min(frames), max(frames)
        span = self._spans.get(name)
        if span is not None:
            span.frames.update(frames)
            if span.inferred:
                span.inferred = inferred
            if span.first_frame <= first and last <= span.last_frame:
                return  # nothing new about where the phase starts or ends
        times = self._times
        t_first = times.get(first, times.get(last, 0))
        t_last = times.get(last, t_first)
        if span is None:
            self._spans[name] = _PhaseSpan(first, last, t_first, t_last, inferred, set(frames))
            return
        if first < span.first_frame:
            span.first_frame, span.start_ns = first, t_first
        if last > span.last_frame:
            span.last_frame, span.end_ns = last, t_last

    def _phases(self, s: ConnectionSummary) -> list[Phase]:
        out: list[Phase] = []
        if s.syn_frames:
            end_frame = s.synack_frame if s.synack_frame is not None else s.syn_frames[-1]
            end_ns = s.synack_ts_ns if s.synack_ts_ns is not None else s.syn_ts_ns[-1]
            out.append(
                Phase(
                    _PHASE.TCP_HANDSHAKE,
                    s.syn_frames[0],
                    end_frame,
                    s.syn_ts_ns[0],
                    end_ns,
                    frames=len(s.syn_frames) + (s.synack_frame is not None),
                )
            )
        for name in sorted(self._spans, key=_PHASE_ORDER.__getitem__):
            sp = self._spans[name]
            out.append(
                Phase(
                    name,
                    sp.first_frame,
                    sp.last_frame,
                    sp.start_ns,
                    sp.end_ns,
                    sp.inferred,
                    len(sp.frames) + sp.counted,
                )
            )
        close = _close_frames(s)
        if close is not None:
            out.append(Phase(_PHASE.CLOSE, close[0], s.last_frame, close[1], s.last_ts_ns))
        return out


_C = ConnectionDissector
_Handler = Callable[[ConnectionDissector, Any, bool], PhaseName | None]
# Which handler classifies which event class (``ConnectionDissector._classify``). A class not
# listed takes the handler of its nearest listed base (Error, Info: ServerMessage), else none.
_CLASSIFY: dict[type, _Handler] = {
    ev.TdsPacket: _C._on_packet,
    ev.PreLogin: _C._on_prelogin,
    **dict.fromkeys(_TLS_EVENTS, _C._on_tls),
    ev.ClientHello: _C._on_client_hello,
    ev.ServerHello: _C._on_server_hello,
    ev.Certificate: _C._on_certificate,
    ev.ChangeCipherSpec: _C._on_change_cipher_spec,
    ev.TlsAlert: _C._on_alert,
    ev.EncryptedData: _C._encrypted,
    ev.Login7: _C._on_login7,
    ev.FedAuthToken: _C._on_login_leg,
    **dict.fromkeys((ev.SqlBatch, ev.Rpc, ev.Attention), _C._on_request),
    **dict.fromkeys(_RESPONSE_TOKENS, _C._on_response_token),
    ev.Sspi: _C._on_sspi,  # a response token too, but the client's SSPI is a login leg
    ev.EndOfResponse: _C._on_end_of_response,
    **dict.fromkeys(
        (ev.ColMetadata, ev.Rows, ev.Order, ev.ReturnStatus, ev.ReturnValue), _C._on_data
    ),
    **dict.fromkeys(_PROBLEM_EVENTS, _C._on_problem),
}


def _close_frames(s: ConnectionSummary) -> tuple[int, int] | None:
    """First FIN or RST of the connection (frame, time), if any."""
    candidates = [f for f in (s.to_server.fin_frame, s.to_client.fin_frame, s.rst_frame) if f]
    if not candidates:
        return None
    frame = min(candidates)
    ts = s.rst_ts_ns if frame == s.rst_frame and s.rst_ts_ns is not None else None
    return frame, ts if ts is not None else s.last_ts_ns


def _login_facts(e: ev.Login7) -> LoginFacts:
    return LoginFacts(
        tds_version=tds_version_name(e.tds_version),
        packet_size=e.packet_size,
        hostname=e.hostname,
        username=e.username,
        appname=e.appname,
        servername=e.servername,
        library=e.library,
        database=e.database,
        read_only_intent=e.read_only_intent,
        sspi=e.sspi_length > 0,
        password_present=e.password_present,
        features=[f"0x{f.id:02x}" for f in e.features],
        frame=e.frames[-1] if e.frames else 0,
    )


def _problem_detail(e: ev.Event) -> str:
    for attr in ("detail", "what"):
        value = getattr(e, attr, None)
        if value:
            return str(value)
    if isinstance(e, ev.Resync):
        return f"skipped {e.skipped} bytes to find the next TDS header"
    return type(e).__name__
