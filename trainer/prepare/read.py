"""Stage 1: find the input files and read documents from them (JSONL, text, Parquet).

Every document gets a global id from (file index, record index), with files numbered in source
order then sorted path order, so ids do not depend on how the work is sliced across map shards.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field

from capstan_api.dataset import Source
from capstan_trainer import storage

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


@dataclass
class ReadStats:
    records: int = 0
    malformed: int = 0
    bytes: int = 0
    malformed_by_file: dict[str, int] = field(default_factory=dict)


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


def _decompress(data: bytes, uri: str, compression: str) -> bytes:
    if compression == "infer":
        compression = "gzip" if uri.endswith(".gz") else "zstd" if uri.endswith((".zst", ".zstd")) else "none"
    if compression == "gzip":
        return gzip.decompress(data)
    if compression == "zstd":
        import zstandard

        # Streaming reader: frames written without a content size are common (zstd CLI from a pipe).
        with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)) as r:
            return r.read()
    return data


def read_raw(f: InputFile) -> bytes:
    try:
        return storage.read_bytes(f.uri)
    except (FileNotFoundError, PermissionError, IsADirectoryError, OSError) as exc:
        raise InputError(f"spec.sources[{f.source_index}]: cannot read {f.uri}: {exc}") from exc


def read_file(f: InputFile, src: Source, data: bytes, stats: ReadStats) -> Iterator[Doc]:
    """Documents of one file. Malformed records are counted in `stats` and skipped."""
    where = f"spec.sources[{f.source_index}]: {f.uri}"
    base = f.index << RECORD_BITS
    if src.format == "parquet":
        yield from _read_parquet(f, src, data, stats, where)
        return
    try:
        raw = _decompress(data, f.uri, src.compression)
    except (OSError, EOFError, ValueError) as exc:
        raise InputError(f"{where}: cannot decompress: {exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        if src.format == "text":
            raise InputError(f"{where}: not UTF-8 text: {exc}") from exc
        text = None  # jsonl: decode line by line so one bad line is one malformed record
    if src.format == "text":
        stats.records += 1
        yield Doc(base, text, f.source_index, f.uri, 0, src.licence)
        return
    lines = text.split("\n") if text is not None else raw.split(b"\n")
    for i, line in enumerate(lines):
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError:
                _bad(stats, f.uri)
                continue
        if not line.strip():
            continue
        stats.records += 1
        try:
            obj = json.loads(line)
        except ValueError:
            _bad(stats, f.uri)
            continue
        doc = _from_object(obj, src, f, i, base)
        if doc is None:
            _bad(stats, f.uri)
            continue
        yield doc


def _bad(stats: ReadStats, uri: str) -> None:
    stats.malformed += 1
    stats.malformed_by_file[uri] = stats.malformed_by_file.get(uri, 0) + 1


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


def _read_parquet(f: InputFile, src: Source, data: bytes, stats: ReadStats, where: str) -> Iterator[Doc]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{where}: not a readable Parquet file: {exc}") from exc
    if src.text_field not in table.column_names:
        raise InputError(
            f"{where}: textField {src.text_field!r} is not a column (found {table.column_names})"
        )
    cols = [c for c in (src.text_field, src.licence_field, src.url_field) if c and c in table.column_names]
    rows = table.select(cols).to_pylist()
    base = f.index << RECORD_BITS
    for i, row in enumerate(rows):
        stats.records += 1
        doc = _from_object(row, src, f, i, base)
        if doc is None:
            _bad(stats, f.uri)
            continue
        yield doc


def file_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
