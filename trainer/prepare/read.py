"""Stage 1: find the input files and read documents from them (JSONL, text, Parquet).

Every document gets a global id from (file index, record index), with files numbered in source
order then sorted path order, so ids do not depend on how the work is sliced across map shards.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO

import zstandard

from capstan_api.dataset import Source
from capstan_trainer import storage
from capstan_trainer.prepare import conversation

# Document ids are file_index << RECORD_BITS | record index: fits int64 for 2^31 files of 2^32 records.
RECORD_BITS = 32


class InputError(ValueError):
    """Bad input that retrying cannot fix (exit code 3); the message names the source or file."""


@dataclass(frozen=True)
class InputFile:
    index: int
    source_index: int
    uri: str
    size: int


@dataclass
class Doc:
    id: int
    text: str
    source_index: int
    file_uri: str
    record: int
    licence: str
    url: str = ""
    messages: list[dict] | dict | None = None
    """messages: a chat record's turns ({"role", "content"}), or a preference record's
    {"prompt", "chosen", "rejected"} turns; text is then their contents joined."""


@dataclass
class ReadStats:
    records: int = 0
    malformed: int = 0
    bytes: int = 0
    malformed_by_file: dict[str, int] = field(default_factory=dict)
    first_error: dict[str, str] = field(default_factory=dict)
    """first_error: input URI -> "line N: why" of its first malformed record (chat records)."""
    files: dict[str, str] = field(default_factory=dict)
    """files: input URI -> sha256 of its bytes, for the fingerprint."""


def _with_protocol(fs, uri: str, path: str) -> str:
    proto = uri.split("://", 1)[0] if "://" in uri else ""
    return f"{proto}://{path}" if proto else path


def list_files(sources: list[Source]) -> list[InputFile]:
    """Expand every source URI (file, folder or glob) into a sorted list of files.

    A source that matches nothing is an input error naming the source.
    """
    out: list[InputFile] = []
    for si, src in enumerate(sources):
        fs, path = storage.filesystem(src.uri)
        try:
            if any(c in path for c in "*?["):
                found = fs.glob(path, detail=True)
            elif fs.isdir(path):
                found = fs.find(path, detail=True)
            elif fs.exists(path):
                found = {path: fs.info(path)}
            else:
                found = {}
        except PermissionError as exc:
            raise InputError(f"spec.sources[{si}].uri: cannot list {src.uri}: {exc}") from exc
        files = sorted(
            (p, int(info.get("size") or 0))
            for p, info in found.items()
            if info.get("type", "file") == "file" and not p.rsplit("/", 1)[-1].startswith(".")
        )
        if not files:
            raise InputError(f"spec.sources[{si}].uri: no files match {src.uri}")
        for p, size in files:
            out.append(InputFile(len(out), si, _with_protocol(fs, src.uri, p), size))
    return out


class HashingReader(io.RawIOBase):
    """A raw stream over a storage file that hashes and counts the bytes read through it."""

    def __init__(self, f: IO[bytes], stats: ReadStats | None = None) -> None:
        self.f, self.stats = f, stats
        self.sha = hashlib.sha256()
        self.bytes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self.f.read(len(b))
        n = len(data)
        b[:n] = data
        self.sha.update(data)
        self.bytes += n
        if self.stats is not None:  # live, for the progress line
            self.stats.bytes += n
        return n

    def drain(self) -> None:
        """Reads what a decompressor left (trailing bytes) so the hash covers the whole file."""
        while self.readinto(bytearray(CHUNK)):
            pass


CHUNK = 1 << 20  # bytes read from storage at a time
_CORRUPT = (gzip.BadGzipFile, EOFError, zlib.error, zstandard.ZstdError)


def _compression(f: InputFile, src: Source) -> str:
    if src.compression != "infer":
        return src.compression
    return "gzip" if f.uri.endswith(".gz") else "zstd" if f.uri.endswith((".zst", ".zstd")) else "none"


def _decompressed(raw: HashingReader, compression: str) -> IO[bytes]:
    """A buffered, line-iterable stream of the decompressed bytes."""
    if compression == "gzip":
        return gzip.GzipFile(fileobj=io.BufferedReader(raw, CHUNK), mode="rb")
    if compression == "zstd":
        # Streaming reader: frames without a content size are common (zstd CLI from a pipe).
        reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
        return io.BufferedReader(reader, CHUNK)
    return io.BufferedReader(raw, CHUNK)


@contextmanager
def _opened(f: InputFile) -> Iterator[IO[bytes]]:
    where = f"spec.sources[{f.source_index}]: cannot read {f.uri}"
    try:
        fs, path = storage.filesystem(f.uri)
        handle = fs.open(path, "rb", block_size=CHUNK)
    except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        raise InputError(f"{where}: {exc}") from exc
    with handle:
        yield handle


def read_documents(f: InputFile, src: Source, stats: ReadStats) -> Iterator[Doc]:
    """Documents of one file, streamed: JSONL line by line, Parquet by row group, never the whole
    file in memory. Malformed records are counted in `stats` and skipped; a file that cannot be
    decompressed or decoded is an InputError naming it. The file's sha256 lands in stats.files."""
    if src.format == "parquet":
        yield from _read_parquet(f, src, stats)
        return
    where = f"spec.sources[{f.source_index}]: {f.uri}"
    base = f.index << RECORD_BITS
    with _opened(f) as handle:
        raw = HashingReader(handle, stats)
        stream = _decompressed(raw, _compression(f, src))
        try:
            if src.format == "text":
                data = stream.read()  # one document per file: the document is the file
                try:
                    text = data.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise InputError(f"{where}: not UTF-8 text: {exc}") from exc
                stats.records += 1
                yield Doc(base, text, f.source_index, f.uri, 0, src.licence)
            else:
                for i, line in enumerate(stream):
                    yield from _jsonl_record(line, src, f, i, base, stats)
            raw.drain()
        except _CORRUPT as exc:
            raise InputError(f"{where}: cannot decompress: {exc}") from exc
    stats.files[f.uri] = raw.sha.hexdigest()


def _jsonl_record(
    line: bytes, src: Source, f: InputFile, i: int, base: int, stats: ReadStats
) -> Iterator[Doc]:
    if not line.strip():
        return
    stats.records += 1
    try:
        obj = json.loads(line)  # bytes in: UTF-8 decoding errors surface as ValueError here
    except ValueError:
        _bad(stats, f.uri, f"line {i + 1}: not JSON")
        return
    if src.format in ("chat", "preference"):
        try:
            messages = conversation.parse(obj) if src.format == "chat" else conversation.parse_preference(obj)
        except conversation.BadRecord as exc:
            _bad(stats, f.uri, f"line {i + 1}: {exc}")
            return
        obj = {**obj, src.text_field: conversation.text_of(messages)}
    else:
        messages = None
    doc = _from_object(obj, src, f, i, base)
    if doc is None:
        _bad(stats, f.uri, f"line {i + 1}: no string field {src.text_field!r}")
        return
    doc.messages = messages
    yield doc


def _bad(stats: ReadStats, uri: str, why: str = "") -> None:
    stats.malformed += 1
    stats.malformed_by_file[uri] = stats.malformed_by_file.get(uri, 0) + 1
    if why:
        stats.first_error.setdefault(uri, why)


def _from_object(obj, src: Source, f: InputFile, record: int, base: int) -> Doc | None:
    if not isinstance(obj, dict):
        return None
    text = obj.get(src.text_field)
    if not isinstance(text, str):
        return None
    lic = obj.get(src.licence_field) if src.licence_field else None
    url = obj.get(src.url_field) if src.url_field else None
    return Doc(
        base | record,
        text,
        f.source_index,
        f.uri,
        record,
        lic if isinstance(lic, str) and lic else src.licence,
        url if isinstance(url, str) else "",
    )


def _read_parquet(f: InputFile, src: Source, stats: ReadStats) -> Iterator[Doc]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    where = f"spec.sources[{f.source_index}]: {f.uri}"
    base = f.index << RECORD_BITS
    with _opened(f) as handle:
        try:
            pf = pq.ParquetFile(handle)
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"{where}: not a readable Parquet file: {exc}") from exc
        names = pf.schema_arrow.names
        if src.text_field not in names:
            raise InputError(f"{where}: textField {src.text_field!r} is not a column (found {names})")
        cols = [c for c in (src.text_field, src.licence_field, src.url_field) if c and c in names]
        i = 0
        try:
            for rg in range(pf.num_row_groups):  # one row group in memory at a time
                for row in pf.read_row_group(rg, columns=cols).to_pylist():
                    stats.records += 1
                    doc = _from_object(row, src, f, i, base)
                    i += 1
                    if doc is None:
                        _bad(stats, f.uri)
                        continue
                    yield doc
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"{where}: not a readable Parquet file: {exc}") from exc
    # Parquet is read by row group, out of order: its hash is a second, sequential pass.
    with _opened(f) as handle:
        raw = HashingReader(handle)
        raw.drain()
    stats.bytes += raw.bytes
    stats.files[f.uri] = raw.sha.hexdigest()
