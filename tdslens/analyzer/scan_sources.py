"""What `tdslens scan` reads: files, folders, globs and archive members, as `ScanItem`s.

Why a module of its own: finding captures is where the untrusted input is. Everything here is
about not being fooled by it: a file is a capture because of its magic bytes (never its name);
a folder walk never follows a symlink out of the scanned tree; an archive member is read as a
stream, and a member the analyzer must see as a file is copied ("spooled") into OUTDIR's spool
folder under a name *we* choose, so a member called ``../../etc/x`` or ``/etc/x`` cannot write
anywhere else, and the copy stops at the size and ratio limits (decompression bombs).

The analyzer reads a path (`open_capture` memory-maps or streams the file itself, gzip
included), so plain files and ``.gz`` captures are handed over as they are; only members of
``.zip`` / ``.tar`` / ``.tar.gz`` archives are spooled.
"""

from __future__ import annotations

import glob
import hashlib
import os
import stat
import struct
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

# pcap (µs/ns, either byte order), pcapng, NetMon 2.x: what open_capture accepts.
CAPTURE_MAGICS = frozenset(
    {
        b"\xd4\xc3\xb2\xa1",
        b"\xa1\xb2\xc3\xd4",
        b"\x4d\x3c\xb2\xa1",
        b"\xa1\xb2\x3c\x4d",
        b"\x0a\x0d\x0d\x0a",
        b"GMBU",
    }
)
GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"
EMPTY_ZIP_MAGIC = b"PK\x05\x06"
SNIFF_BYTES = 512  # a tar header is 512 bytes; "ustar" sits at offset 257
COPY_CHUNK = 1 << 20
ARCHIVE = "archive (survey only)"
STOPPED_AT_BOMB = "rest of the archive not read: it follows a member over the decompression limits"
# Ratios are judged only once this much has come out: tiny members compress absurdly well.
RATIO_GRACE_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what one archive member may expand to (see docs/scan.md, "Archive safety")."""

    max_member_bytes: int = 4 << 30
    max_ratio: float = 200.0


@dataclass(slots=True)
class ScanItem:
    """One thing found. ``skipped`` says why it is not analysed; otherwise ``path`` is readable.

    ``display`` is what the user sees: the path, or ``archive.zip!folder/member.pcap``.
    ``spooled`` marks a temporary copy (an archive member) that the scanner deletes when done;
    its ``sha256`` is known from the copy, so nobody reads it twice.
    """

    display: str
    path: str | None
    size: int
    skipped: str | None = None
    spooled: bool = False
    sha256: str | None = None


class BombError(Exception):
    """An archive member expands past the size or ratio limit."""


def sniff(head: bytes) -> str | None:
    """'capture', 'zip', 'tar', 'gzip' (compressed, look inside) or None, by magic bytes only."""
    if head[:4] in CAPTURE_MAGICS:
        return "capture"
    if head[:4] in (ZIP_MAGIC, EMPTY_ZIP_MAGIC):
        return "zip"
    if head[:2] == GZIP_MAGIC:
        return "gzip"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    return None


def sniff_gzip(head: bytes) -> str | None:
    """What a gzip stream holds: 'capture' (open_capture reads it), 'tar', or None."""
    try:
        inner = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, SNIFF_BYTES)
    except zlib.error:
        return None
    kind = sniff(inner)
    return kind if kind in ("capture", "tar") else None


def describe_magic(head: bytes) -> str:
    return f"not a capture or archive (magic bytes {head[:4].hex() or 'none: empty file'})"


def unsafe_member_name(name: str) -> str | None:
    """Why an archive member name could escape a folder (absolute, drive, ``..``), or None."""
    if name.startswith(("/", "\\")):
        return "absolute path"
    if len(name) > 1 and name[1] == ":":
        return "drive letter"
    if any(part == ".." for part in name.replace("\\", "/").split("/")):
        return "'..' in the path"
    return None


def iter_items(
    inputs: Iterable[str], spool_dir: Path, limits: Limits, survey: bool = False
) -> Iterator[ScanItem]:
    """Every capture (or skipped file) under ``inputs``, each real file once, in a stable order.

    Globs are expanded here, so ``'captures/**/*.pcap'`` works even when the shell did not.
    Archive members are spooled lazily, one at a time, as the caller asks for the next item.
    ``survey``: a quick pass for the progress bar: archives are not opened but yielded whole,
    with ``skipped=ARCHIVE``.
    """
    seen: set[str] = set()
    for arg in inputs:
        if glob.has_magic(arg) and not os.path.exists(arg):
            matches = sorted(glob.glob(arg, recursive=True))
            if not matches:
                yield ScanItem(arg, None, 0, skipped="no file matches this pattern")
            for m in matches:
                yield from _from_path(m, Path(m), seen, spool_dir, limits, survey)
        else:
            yield from _from_path(arg, Path(arg), seen, spool_dir, limits, survey)


def _from_path(
    display: str, path: Path, seen: set[str], spool_dir: Path, limits: Limits, survey: bool
) -> Iterator[ScanItem]:
    if not path.exists():
        yield ScanItem(display, None, 0, skipped="no such file or folder")
    elif path.is_dir():
        yield from _walk(path, seen, spool_dir, limits, survey)
    else:
        yield from _from_file(display, path, seen, spool_dir, limits, survey)


def _walk(
    root: Path, seen: set[str], spool_dir: Path, limits: Limits, survey: bool
) -> Iterator[ScanItem]:
    """Recursive, sorted, never following a symlink out of ``root`` (nor into folders at all)."""
    real_root = os.path.realpath(root)
    outdir_real = os.path.dirname(os.path.realpath(spool_dir))
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        real = os.path.realpath(dirpath)
        if real == outdir_real or real.startswith(outdir_real + os.sep):
            dirnames.clear()  # OUTDIR inside the scanned folder: never scan our own outputs
            continue
        for name in [
            *sorted(filenames),
            *(d for d in dirnames if os.path.islink(Path(dirpath, d))),
        ]:
            p = Path(dirpath, name)
            if p.is_symlink():
                target = os.path.realpath(p)
                if os.path.commonpath([real_root, target]) != real_root:
                    yield ScanItem(
                        str(p), None, 0, skipped="symlink points outside the scanned tree"
                    )
                    continue
                if os.path.isdir(target):
                    continue  # a folder inside the tree: scanned at its real place
            yield from _from_file(str(p), p, seen, spool_dir, limits, survey)


def _from_file(
    display: str, path: Path, seen: set[str], spool_dir: Path, limits: Limits, survey: bool
) -> Iterator[ScanItem]:
    real = os.path.realpath(path)
    if real in seen:
        return
    seen.add(real)
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(64 * 1024)
    except OSError as exc:
        yield ScanItem(display, None, 0, skipped=f"cannot read: {exc.strerror or exc}")
        return
    kind = sniff(head)
    if kind == "gzip":
        kind = {"capture": "capture", "tar": "tgz"}.get(sniff_gzip(head) or "")
    if kind == "capture":
        yield ScanItem(display, str(path), size)
    elif survey and kind in ("zip", "tar", "tgz"):
        yield ScanItem(display, None, size, skipped=ARCHIVE)
    elif kind == "zip":
        yield from _zip_members(display, path, spool_dir, limits)
    elif kind in ("tar", "tgz"):
        yield from _tar_members(display, path, spool_dir, limits, compressed=kind == "tgz")
    else:
        yield ScanItem(display, None, size, skipped=describe_magic(head))


# -- archives ------------------------------------------------------------------------------------


def _zip_members(display: str, path: Path, spool_dir: Path, limits: Limits) -> Iterator[ScanItem]:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        yield ScanItem(display, None, 0, skipped=f"damaged zip archive: {exc}")
        return
    with zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            where = f"{display}!{info.filename}"
            why = _member_refusal(info.filename)
            if why is None and stat.S_ISLNK(info.external_attr >> 16):
                why = "link member not followed"
            if why is None and info.file_size > limits.max_member_bytes:
                why = _too_big(info.file_size, limits)
            if (
                why is None
                and info.file_size > RATIO_GRACE_BYTES
                and info.file_size / max(info.compress_size, 1) > limits.max_ratio
            ):
                why = _bomb(info.file_size / max(info.compress_size, 1), limits)
            if why is not None:
                yield ScanItem(where, None, info.file_size, skipped=why)
                continue
            try:
                with zf.open(info) as stream:
                    size_in = info.compress_size
                    yield _spool_member(where, stream, spool_dir, limits, lambda n=size_in: n)
            except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:
                yield ScanItem(where, None, info.file_size, skipped=f"damaged member: {exc}")


def _tar_members(
    display: str, path: Path, spool_dir: Path, limits: Limits, compressed: bool
) -> Iterator[ScanItem]:
    """Streaming mode ('r|*'): one pass, no seeking, members in archive order.

    In a compressed tar the only way past a member is to decompress it, so after a member
    over a limit (a bomb) the rest of the archive is not read, and a row says so.
    """
    with path.open("rb") as raw:
        try:
            tf = tarfile.open(fileobj=raw, mode="r|*")  # noqa: SIM115 (closed below)
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            yield ScanItem(display, None, 0, skipped=f"damaged tar archive: {exc}")
            return
        with tf:
            yield from _tar_stream(display, tf, raw, spool_dir, limits, compressed)


def _tar_stream(
    display: str,
    tf: tarfile.TarFile,
    raw: BinaryIO,
    spool_dir: Path,
    limits: Limits,
    compressed: bool,
) -> Iterator[ScanItem]:
    try:
        for member in tf:
            where = f"{display}!{member.name}"
            why = _member_refusal(member.name)
            if why is None and (member.issym() or member.islnk()):
                why = "link member not followed"
            if member.isdir() and why is None:
                continue
            if why is None and not member.isfile():
                why = "not a regular file"
            if why is None and member.size > limits.max_member_bytes:
                why = _too_big(member.size, limits)
            if why is None:
                stream = tf.extractfile(member)
                assert stream is not None  # a regular file
                # Compressed bytes consumed so far against tar bytes out: the stream's ratio.
                item = _spool_member(
                    where, stream, spool_dir, limits, raw.tell, start_out=member.offset_data
                )
            else:
                item = ScanItem(where, None, member.size, skipped=why)
            yield item
            if compressed and (item.skipped or "").startswith("decompression"):
                yield ScanItem(display, None, 0, skipped=STOPPED_AT_BOMB)
                return
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        yield ScanItem(display, None, 0, skipped=f"damaged tar archive (stopped): {exc}")


def _spool_member(
    where: str,
    stream: BinaryIO,
    spool_dir: Path,
    limits: Limits,
    compressed_so_far: object,
    start_out: int = 0,
) -> ScanItem:
    """Copy one member to a temporary file named by us, or explain why not (never raises)."""
    head = stream.read(64 * 1024)
    kind = sniff(head)
    if kind == "gzip":
        kind = "capture" if sniff_gzip(head) == "capture" else "nested"
    if kind in ("zip", "tar", "nested"):
        return ScanItem(where, None, 0, skipped="archive inside an archive: not opened")
    if kind != "capture":
        return ScanItem(where, None, len(head), skipped=describe_magic(head))
    spool_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="member-", suffix=".cap", dir=spool_dir)
    digest = hashlib.sha256()
    written = 0
    try:
        with os.fdopen(fd, "wb") as out:
            chunk = head
            while chunk:
                written += len(chunk)
                if written > limits.max_member_bytes:
                    raise BombError(_too_big(written, limits))
                ratio = (start_out + written) / max(int(compressed_so_far()), 1)  # type: ignore[operator]
                if written > RATIO_GRACE_BYTES and ratio > limits.max_ratio:
                    raise BombError(_bomb(ratio, limits))
                digest.update(chunk)
                out.write(chunk)
                chunk = stream.read(COPY_CHUNK)
    except (BombError, zipfile.BadZipFile, zlib.error, OSError, EOFError, struct.error) as exc:
        os.unlink(name)
        reason = str(exc) if isinstance(exc, BombError) else f"damaged member: {exc}"
        return ScanItem(where, None, written, skipped=reason)
    return ScanItem(where, name, written, spooled=True, sha256=digest.hexdigest())


def _member_refusal(name: str) -> str | None:
    why = unsafe_member_name(name)
    return f"unsafe member name ({why}): not extracted" if why else None


def _too_big(size: int, limits: Limits) -> str:
    return (
        f"decompression limit: member expands to {size:,} bytes or more "
        f"(limit {limits.max_member_bytes:,}; --max-member-size)"
    )


def _bomb(ratio: float, limits: Limits) -> str:
    return (
        f"decompression bomb: member expands {ratio:.0f}x "
        f"(limit {limits.max_ratio:.0f}x; --max-ratio)"
    )
