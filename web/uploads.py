"""Multipart uploads parsed as they arrive: each file part goes straight into storage and its file is closed
before the next part begins, so a request of 2,000 files holds one open file (not one per part, which hits
`ulimit -n`), nothing is spooled twice, and a refusal can name the file and the limit it broke.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from werkzeug.datastructures import Headers
from werkzeug.http import parse_options_header
from werkzeug.sansio.multipart import (
    Data,
    Epilogue,
    Field,
    File,
    MultipartDecoder,
    NeedData,
)

from shared.names import clean_filename
from shared.storage import BlobWriter, LocalStorage, StorageFull, TooLarge

from .errors import ApiError

CHUNK = 256 * 1024
MAX_HEADER_BYTES = 1024 * 1024  # what the decoder may buffer while looking for a part's headers


@dataclass
class StoredPart:
    filename: str
    sha256: str
    size_bytes: int
    created: bool  # this request put the content in storage (nothing else had it)
    spare: str | None = None  # this request's own copy of content stored before it (see LocalStorage.settle)


class _Decoder(MultipartDecoder):
    def _parse_headers(self, data: bytes | bytearray) -> Headers:
        # Werkzeug decodes part headers as strict UTF-8, so one file name in another encoding made the whole
        # request unreadable ("no files"). Undecodable bytes become U+FFFD here; the name stays recognisable.
        return super()._parse_headers(bytes(data).decode("utf-8", "replace").encode())


def boundary(content_type: str | None) -> str:
    """The multipart boundary of an upload; checked before anything else, a retry's stored answer included,
    since a request with no files is no retry of one that had them."""
    mimetype, options = parse_options_header(content_type or "")
    if mimetype != "multipart/form-data" or not options.get("boundary"):
        raise ApiError(400, "no files: send a multipart/form-data body with one or more fields named 'files'")
    return options["boundary"]


def receive_files(stream: BinaryIO, content_type: str | None, storage: LocalStorage, max_file_bytes: int,
                  max_files: int, too_many: Callable[[int], ApiError]) -> list[StoredPart]:
    """Store every `files` part of a multipart body. On any refusal, what this request stored is removed again
    (the caller removes it if it refuses later) and the ApiError says why."""
    decoder = _Decoder(boundary(content_type).encode(), MAX_HEADER_BYTES)
    stored: list[StoredPart] = []
    writer: BlobWriter | None = None
    name = ""
    try:
        while True:
            event = decoder.next_event()
            if isinstance(event, NeedData):
                decoder.receive_data(stream.read(CHUNK) or None)
            elif isinstance(event, File) and event.name == "files":
                if len(stored) >= max_files:
                    raise too_many(len(stored) + 1)
                name, writer = clean_filename(event.filename), storage.writer(max_file_bytes)
            elif isinstance(event, (File, Field)):
                writer = None  # another field: read past it
            elif isinstance(event, Data) and writer is not None:
                writer.write(event.data)
                if not event.more_data:
                    sha, size, created = writer.finish(keep_spare=True)
                    stored.append(StoredPart(name, sha, size, created, writer.spare))
                    writer = None
            elif isinstance(event, Epilogue):
                break
    except TooLarge as exc:
        discard(storage, stored)
        raise ApiError(413, f"{name}: the file is larger than the limit of {_mib(exc.limit)}; "
                            "nothing from this request was added", filename=name, limit=exc.limit) from None
    except StorageFull:
        discard(storage, stored)
        raise ApiError(507, "the server's storage is full: nothing from this request was added; retry when "
                            "space has been freed", headers={"Retry-After": "60"}) from None
    except ValueError:
        discard(storage, stored)
        raise ApiError(400, "the multipart body is malformed or cut short; nothing from this request was added") from None
    except BaseException:
        discard(storage, stored)
        raise
    finally:
        if writer is not None:
            writer.abort()
    if not stored:
        raise ApiError(400, "no files: send one or more multipart fields named 'files'")
    return stored


def discard(storage: LocalStorage, parts: list[StoredPart]) -> None:
    """Remove what a refused request added to storage; content that was already there stays."""
    drop_spares(parts)
    for part in parts:
        if part.created:
            storage.discard(part.sha256)


def drop_spares(parts: list[StoredPart]) -> None:
    for part in parts:
        if part.spare is not None:
            Path(part.spare).unlink(missing_ok=True)
            part.spare = None


def settle(storage: LocalStorage, parts: list[StoredPart]) -> None:
    """Once the request's rows are committed: every upload they refer to is in storage (LocalStorage.settle)."""
    for part in parts:
        spare, part.spare = part.spare, None
        storage.settle(part.sha256, spare)


def _mib(n: int) -> str:
    return f"{n / 2**20:g} MiB ({n} bytes)" if n >= 2**20 else f"{n} bytes"
