"""Verdicts: did each attempt succeed, and which finding explains each failure first.

Why separate from the findings: a finding says what one connection or link shows; a verdict
reads an attempt as the client lived it. An attempt is judged by its *last* try (drivers retry,
and a retry that got in makes the attempt a success even though the earlier failure stays
reported), and the explaining finding is the one of that try that comes first in
`finding_codes.PRIORITY` (a blocked redirect explains a failure better than a slow login).
"""

from __future__ import annotations

from collections import defaultdict

from tdslens.analyzer import roles as r
from tdslens.analyzer.correlate import Context
from tdslens.analyzer.finding_codes import PRIORITY
from tdslens.analyzer.findings import connection_failure
from tdslens.analyzer.model import (
    Attempt,
    CaptureVerdict,
    ConnectionRecord,
    Finding,
    Redirect,
    RedirectOutcome,
    Role,
    Severity,
    Verdict,
)

# Codes that mean "the capture cannot tell", not "it failed".
UNDECIDED = {"LOGIN_RESULT_HIDDEN", "CAPTURE_INCOMPLETE"}


def judge(ctx: Context) -> None:
    """Set every attempt's verdict and findings, then the capture's verdict."""
    a = ctx.analysis
    by_stream: dict[int, list[int]] = defaultdict(list)
    for i, f in enumerate(a.findings):
        for s in f.connections:
            by_stream[s].append(i)
    roles = {x.stream: x.role for x in a.roles}  # built once: captures hold thousands
    same: dict[tuple[str, str | None, str], Verdict] = {}  # equal verdicts kept once
    for attempt in a.attempts:
        attempt.findings = sorted({i for s in attempt.connections for i in by_stream.get(s, [])})
        v = _attempt_verdict(ctx, attempt, roles)
        attempt.verdict = same.setdefault((v.result, v.finding, v.summary), v)
    a.verdict = _capture_verdict(a.attempts)


def _last_try(ctx: Context, attempt: Attempt, roles: dict[int, Role]) -> ConnectionRecord:
    """The attempt's last first-contact leg (not a second leg, not a non-SQL connection)."""
    firsts = [
        s
        for s in attempt.connections
        if s not in ctx.second_legs and roles.get(s) is not Role.OTHER
    ]
    return ctx.by_stream[(firsts or attempt.connections)[-1]]


def _attempt_verdict(ctx: Context, attempt: Attempt, roles: dict[int, Role]) -> Verdict:
    last = _last_try(ctx, attempt, roles)
    tries = f" after {attempt.tries} tries" if attempt.tries > 1 else ""
    if last.stream in ctx.gateway_of:
        red = ctx.analysis.redirects[ctx.gateway_of[last.stream]]
        if red.outcome is RedirectOutcome.CONNECTED:
            return Verdict("ok", None, f"redirected to {_target(red)} and logged in{tries}")
        streams = {red.gateway, *red.second_legs}
        f = _explaining(ctx, attempt, streams)
        undecided = (RedirectOutcome.UNKNOWN, RedirectOutcome.ANSWERED)
        result = "unknown" if red.outcome in undecided else "failed"
        return _from_finding(result, f, tries)
    if r.logged_in(last) or r.data_exchanged(last):
        return Verdict("ok", None, f"logged in to {last.server}{tries}")
    f = _explaining(ctx, attempt, {last.stream})
    if f is None:
        failure = connection_failure(ctx, last, Role.UNKNOWN)
        f = failure
    if f is None:
        return Verdict("unknown", None, f"no login outcome visible on stream {last.stream}")
    return _from_finding("unknown" if f.code in UNDECIDED else "failed", f, tries)


def _explaining(ctx: Context, attempt: Attempt, streams: set[int]) -> Finding | None:
    """The attempt's finding on these streams that comes first in PRIORITY (errors first)."""
    found = [
        ctx.analysis.findings[i]
        for i in attempt.findings
        if streams.intersection(ctx.analysis.findings[i].connections)
    ]
    found = [f for f in found if f.severity is Severity.ERROR] or [
        f for f in found if f.code in UNDECIDED
    ]
    if not found:
        return None
    return min(found, key=lambda f: PRIORITY.index(f.code))


def _from_finding(result: str, f: Finding | None, tries: str) -> Verdict:
    if f is None:
        return Verdict(result, None, f"no explaining finding{tries}")
    if " tries" in f.title:  # one finding for every try already counts them in its title
        tries = ""
    return Verdict(result, f.code, f"{result}{tries}: {f.title}")


def _target(red: Redirect) -> str:
    host = red.target_host or "the worker"
    return f"{host}:{red.target_port}" if red.target_port else host


def _capture_verdict(attempts: list[Attempt]) -> CaptureVerdict:
    ok = [a for a in attempts if a.verdict.result == "ok"]
    failed = [a for a in attempts if a.verdict.result == "failed"]
    unknown = [a for a in attempts if a.verdict.result == "unknown"]
    if not attempts:
        result = "empty"
    elif len(ok) == len(attempts):
        result = "ok"
    elif len(failed) == len(attempts):
        result = "failed"
    elif not failed and not ok:
        result = "unknown"
    else:
        result = "mixed" if failed or ok else "unknown"
    first = failed[0] if failed else (unknown[0] if unknown else None)
    code = first.verdict.finding if first is not None else None
    summary = (
        f"{len(attempts)} attempt(s): {len(ok)} ok, {len(failed)} failed, {len(unknown)} unknown"
    )
    if first is not None:
        summary += f"; first problem: {first.verdict.summary}"
    return CaptureVerdict(result, len(ok), len(failed), len(unknown), code, summary)
