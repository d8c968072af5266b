"""Reading a capture file as a sequence of large chunks, transparently gunzipped.

Why chunks: support captures are many GB. Readers walk records inside one chunk (8-32 MiB),
hand the chunk to the layers above as `FrameBatch.data`, then ask for the next one; the
incomplete record at a chunk's end is carried over. Memory stays flat whatever the file size.
Gzip is recognised by its magic bytes (1f 8b), never by the file name, and is streamed.
"""

from __future__ import annotations

import os
import zlib
from typing import BinaryIO

GZIP_MAGIC = b"\x1f\x8b"
DEFAULT_CHUNK = 16 << 20


class ChunkSource:
    """A window `buf[pos:]` onto the (decompressed) file that grows on demand."""

    def __init__(self, path: str, chunk_size: int = DEFAULT_CHUNK) -> None:
        self.path = path
        self.chunk_size = chunk_size
        self.file_size = os.stat(path).st_size
        self._raw: BinaryIO = open(path, "rb", buffering=0)  # noqa: SIM115 - see close()
        self.compressed = self._raw.read(2) == GZIP_MAGIC
        self._raw.seek(0)
        self._gunzip = Gunzip(self._raw) if self.compressed else None
        self.buf: bytes = b""
        self.pos = 0  # next unread byte in buf
        self.base = 0  # file offset (decompressed) of buf[0]
        self.eof = False
        self.error: str | None = None  # why reading stopped early (damaged gzip stream)

    @property
    def available(self) -> int:
        return len(self.buf) - self.pos

    def fill(self, need: int) -> bool:
        """Make at least `need` bytes available after `pos`; False if the file ends first."""
        if self.available >= need or self.eof:
            return self.available >= need
        if not self.compressed:
            # Re-read from the first unread byte: no copy of the carried-over tail. The old
            # chunk is let go first, so that only one is in memory (if nobody else holds it).
            self.base += self.pos
            self._raw.seek(self.base)
            self.buf = b""
            self.buf = self._read(self._raw, max(self.chunk_size, need))
            self.pos = 0
            if len(self.buf) < max(self.chunk_size, need):
                self.eof = True
            return self.available >= need
        assert self._gunzip is not None
        while self.available < need and not self.eof:
            chunk = self._gunzip.read(max(self.chunk_size, need - self.available))
            if not chunk:
                self.eof = True
                self.error = self._gunzip.error
                break
            self.base += self.pos
            self.buf = self.buf[self.pos :] + chunk if self.available else chunk
            self.pos = 0
        return self.available >= need

    @staticmethod
    def _read(f: BinaryIO, size: int) -> bytes:
        """Up to `size` bytes; short only at the end of the file."""
        data = f.read(size)
        if len(data) == size or not data:
            return data
        parts = [data]
        got = len(data)
        while got < size:
            more = f.read(size - got)
            if not more:
                break
            parts.append(more)
            got += len(more)
        return b"".join(parts)

    def read_all(self) -> bytes:
        """The rest of the file in one buffer (formats that need random access)."""
        while not self.eof:
            self.fill(self.available + self.chunk_size)
        return self.buf[self.pos :]

    def fileno(self) -> int:
        """The file descriptor of the file on disk (for memory mapping uncompressed files)."""
        return self._raw.fileno()

    def copy_rest(self, out: BinaryIO) -> None:
        """Write everything not yet consumed to `out` (decompressing on the way)."""
        out.write(self.buf[self.pos :])
        self.pos = len(self.buf)
        if self._gunzip is not None:
            while chunk := self._gunzip.read(self.chunk_size):
                out.write(chunk)
            self.error = self._gunzip.error
        else:
            while chunk := self._raw.read(self.chunk_size):
                out.write(chunk)
        self.eof = True

    @property
    def bytes_read(self) -> int:
        """Bytes of the file on disk consumed so far (compressed bytes for gzip): progress."""
        try:
            return self._raw.tell()
        except (OSError, ValueError):  # closed at the end
            return self.file_size

    def close(self) -> None:
        self._raw.close()


class Gunzip:
    """Streaming gunzip that keeps every byte it could decompress.

    `gzip.GzipFile.read(n)` raises on a cut or corrupt stream and loses the whole last read;
    a capture cut short by a full disk must still give its frames. Handles concatenated
    gzip members; `error` says why the stream ended early, if it did."""

    IN_CHUNK = 1 << 20

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self.done = False
        self.error: str | None = None
        self.members = 0
        self.fed = False  # the current member has been given input

    def read(self, n: int) -> bytes:
        out: list[bytes] = []
        got = 0
        while got < n and not self.done:
            data = self.z.unconsumed_tail or self.raw.read(self.IN_CHUNK)
            if not data:
                if self.fed and not self.z.eof:
                    self.error = "compressed stream is cut short (no gzip end marker)"
                self.done = True
                break
            self.fed = True
            try:
                piece = self.z.decompress(data, max(n - got, 1 << 16))
            except zlib.error as exc:
                self.error = f"compressed stream is damaged ({exc})"
                self.done = True
                break
            if piece:
                out.append(piece)
                got += len(piece)
            if self.z.eof:
                self.members += 1
                rest = self.z.unused_data
                if rest and not rest.startswith(GZIP_MAGIC):
                    self.done = True  # trailing garbage after the last member: ignore it
                    break
                self.z = zlib.decompressobj(16 + zlib.MAX_WBITS)
                self.fed = bool(rest)
                if rest:
                    out_more = self.z.decompress(rest, max(n - got, 1 << 16))
                    if out_more:
                        out.append(out_more)
                        got += len(out_more)
        return b"".join(out)
