"""One pass over a capture: read → decode → TCP engine, as a generator the layers above pull.

Why a module of its own: the CLI, the TDS layer and the batch scanner all need the same wiring
and the same bookkeeping of capture problems; none of them should know how the reader, the
decoder and the engine are put together. Nothing here formats text for people.

    pipe = CapturePipeline("trace.pcapng")      # raises CaptureError if unreadable
    for event in pipe.events():                 # TcpEvent, in the order they happened
        ...
    pipe.problems                               # every CaptureProblem, in frame order

`batches()` gives the same events per batch together with the decoded columns, for layers that
also need packets the TCP engine does not handle (UDP for DNS).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tdslens.analyzer.capture import open_capture
from tdslens.analyzer.decode import Decoder
from tdslens.analyzer.frames import CaptureInfo, CaptureProblem
from tdslens.analyzer.packet_columns import PacketColumns
from tdslens.analyzer.tcp import TcpEngine
from tdslens.analyzer.tcp_events import PayloadFilter, TcpEvent, every_stream


@dataclass(slots=True)
class DecodedBatch:
    """One reader batch after decoding, and the TCP events it produced.

    `columns` is None for the final flush (events of connections still open at the end)."""

    columns: PacketColumns | None
    events: list[TcpEvent]


class CapturePipeline:
    """Reads one capture file once, feeding every batch through decoding and the TCP engine."""

    def __init__(
        self,
        path: str | Path,
        engine: TcpEngine | None = None,
        payloads: PayloadFilter = every_stream,
    ) -> None:
        """`payloads` says which connections' bytes the caller reads (`Payload` events); a
        caller that needs only summaries passes `no_stream`, which makes the pass much cheaper.
        It is ignored when an `engine` is given (the engine carries its own)."""
        self.path = str(path)
        self.reader = open_capture(self.path)  # raises CaptureError when nothing can be read
        self.decoder = Decoder(path=self.path)  # keeps IP fragments across batches
        self.engine = engine if engine is not None else TcpEngine(payloads=payloads)
        self._decode_problems: list[CaptureProblem] = []
        self.frames = 0  # frames read so far (highest frame number seen)

    @property
    def info(self) -> CaptureInfo:
        return self.reader.info

    @property
    def problems(self) -> list[CaptureProblem]:
        """Reader and decoder problems together, in frame order."""
        report = getattr(self.reader, "report", None)
        read = list(report.problems) if report is not None else []
        return sorted([*read, *self._decode_problems], key=lambda p: p.frame)

    def batches(self) -> Iterator[DecodedBatch]:
        """One `DecodedBatch` per reader batch, then the final flush. A batch is valid until
        the next one is asked for: its columns (and so the chunk of the file they point into)
        are released then, so that one chunk, not two, is in memory while the next is read."""
        engine = self.engine
        for batch in self.reader.batches():
            if len(batch):
                self.frames = max(self.frames, int(batch.number[-1]))
            columns, problems = self.decoder.decode(batch)
            del batch
            if problems:
                self._decode_problems.extend(problems)
            decoded = DecodedBatch(columns, engine.feed(columns))
            del columns
            yield decoded
            decoded.columns = None
            del decoded
        self._decode_problems.extend(self.decoder.finish())
        yield DecodedBatch(None, engine.finish())

    def events(self) -> Iterator[TcpEvent]:
        for batch in self.batches():
            events = batch.events
            del batch
            yield from events
