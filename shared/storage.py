"""Content-addressed upload storage. No uploaded name ever reaches the filesystem."""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from shared.settings import make_folder
from shared.thumbnails import THUMBNAIL_TYPES

CHUNK = 1024 * 1024


class TooLarge(Exception):
    def __init__(self, limit: int):
        super().__init__(f"file is larger than the limit of {limit} bytes")
        self.limit = limit


class StorageFull(OSError):
    """The storage volume has no room left (ENOSPC, EDQUOT): the caller says so instead of a generic error."""


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
MIN_FREE_BYTES = 64 * 1024 * 1024  # /healthz reports the storage full below this (or 5% of a small volume)


@contextmanager
def _no_space_is_full(root: Path):
    try:
        yield
    except StorageFull:
        raise
    except OSError as exc:
        if exc.errno in NO_SPACE:
            raise StorageFull(exc.errno, f"the storage at {root} is full") from None
        raise


class LocalStorage:
    """Files live at ``root/ab/cd/<sha256>``; a shared volume lets workers on other hosts read them."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.tmp = self.root / "tmp"
        make_folder(self.tmp, f"the upload folder {self.root}", "; set PIXELPROOF_STORAGE_DIR or PIXELPROOF_DATA_DIR")

    def path(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError("not a sha256 hex digest")
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def writer(self, max_bytes: int) -> BlobWriter:
        """Write one upload piece by piece (as a multipart part arrives); see BlobWriter."""
        return BlobWriter(self, max_bytes)

    def put_stream(self, stream: BinaryIO, max_bytes: int) -> tuple[str, int]:
        """Stream to a temp file while hashing; never holds the upload in memory."""
        writer = self.writer(max_bytes)
        try:
            while chunk := stream.read(CHUNK):
                writer.write(chunk)
            sha, size, _ = writer.finish()
            return sha, size
        except BaseException:
            writer.abort()
            raise

    def settle(self, sha256: str, spare: str | None) -> None:
        """After the rows that refer to `sha256` are committed: make sure its upload is there. A deletion that
        found no row referring to it while the request ran may have removed it; `spare` (the request's own copy
        of the same bytes, kept by BlobWriter.finish(keep_spare=True)) takes its place then."""
        if spare is None:
            return
        final = self.path(sha256)
        if final.exists():
            os.unlink(spare)
        else:
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(spare, final)

    def retire(self, sha256: str) -> Path | None:
        """Move an upload and its thumbnails aside, the first step of removing them for good (see
        shared.deletion): unlike a removal it can be undone by restore() if a row referring to them was
        committed meanwhile, and what is finally removed (drop_retired) is only what was moved, never what an
        upload of the same bytes stored at the same paths after the delete's last look at the rows. None:
        neither was there."""
        trash = self.tmp / f"retired-{sha256}-{uuid.uuid4().hex}"
        trash.mkdir()
        for source, name in self._retirable(sha256):
            try:
                os.rename(source, trash / name)
            except FileNotFoundError:
                continue
        if not any(trash.iterdir()):
            trash.rmdir()
            return None
        return trash

    def restore(self, trash: Path, sha256: str) -> None:
        """Put back what retire() moved; a copy stored meanwhile holds the same bytes (or the same thumbnail)."""
        for source, name in self._retirable(sha256):
            if (trash / name).exists():
                source.parent.mkdir(parents=True, exist_ok=True)
                os.replace(trash / name, source)
        trash.rmdir()

    @staticmethod
    def drop_retired(trash: Path) -> None:
        shutil.rmtree(trash)

    def _retirable(self, sha256: str) -> list[tuple[Path, str]]:
        """The upload's path and every thumbnail path it may have, each with its name in a retire() folder."""
        return [(self.path(sha256), "upload")] + [
            (self.thumbnail_path(sha256, int(folder.name), suffix), f"thumbnail-{folder.name}{suffix}")
            for folder in sorted((self.root / "thumbnails").glob("*")) if folder.name.isdigit()
            for suffix in THUMBNAIL_TYPES]

    def discard(self, sha256: str) -> None:
        """Remove an upload (one that a refused request stored and nothing refers to)."""
        self.path(sha256).unlink(missing_ok=True)

    def problem(self) -> str | None:
        """Why uploads cannot be stored right now (for /healthz), or None."""
        try:
            usage = shutil.disk_usage(self.root)
            free = usage.free
            if free < min(MIN_FREE_BYTES, usage.total // 20):
                return f"full: {free // 1024} KiB free"
            fd, name = tempfile.mkstemp(dir=self.tmp)
            os.close(fd)
            os.unlink(name)
        except OSError as exc:
            return f"not writable: {exc.strerror or type(exc).__name__}"
        return None

    def thumbnail_path(self, sha256: str, size: int, suffix: str = ".jpg") -> Path:
        """Thumbnails the worker made, beside the uploads (on the same shared volume) but never among them."""
        upload = self.path(sha256)
        return self.root / "thumbnails" / str(int(size)) / upload.parent.relative_to(self.root) / f"{sha256}{suffix}"

    def find_thumbnail(self, sha256: str, size: int) -> tuple[bytes, str]:
        """A stored thumbnail's bytes and media type: the JPEG, else one stored as PNG by an earlier version.
        Raises FileNotFoundError where there is neither."""
        for suffix, media_type in THUMBNAIL_TYPES.items():
            try:
                return self.thumbnail_path(sha256, size, suffix).read_bytes(), media_type
            except FileNotFoundError:
                continue
        raise FileNotFoundError(sha256)

    def put_thumbnail(self, sha256: str, size: int, jpeg: bytes) -> None:
        final = self.thumbnail_path(sha256, size)
        with _no_space_is_full(self.root):
            final.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=self.tmp)
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(jpeg)
                os.replace(tmp_name, final)  # atomic: the web never serves half a file
            except BaseException:
                if os.path.exists(tmp_name):
                    os.unlink(tmp_name)
                raise

    def has_thumbnails(self, sha256: str, sizes: tuple[int, ...]) -> bool:
        return all(self.thumbnail_path(sha256, s).exists() for s in sizes)

    def read(self, sha256: str) -> bytes:
        return self.path(sha256).read_bytes()

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).exists()


class BlobWriter:
    """One upload on its way into storage: hashed as written to a temp file, moved into place by finish()."""

    def __init__(self, storage: LocalStorage, max_bytes: int):
        self.storage, self.max_bytes = storage, max_bytes
        self.digest = hashlib.sha256()
        self.size = 0
        self.tmp_name = ""
        self.spare: str | None = None  # see finish(keep_spare=True)
        with _no_space_is_full(storage.root):
            fd, self.tmp_name = tempfile.mkstemp(dir=storage.tmp)
        self.out = os.fdopen(fd, "wb")

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.max_bytes:
            self.abort()
            raise TooLarge(self.max_bytes)
        self.digest.update(chunk)
        try:
            with _no_space_is_full(self.storage.root):
                self.out.write(chunk)
        except StorageFull:
            self.abort()
            raise

    def finish(self, keep_spare: bool = False) -> tuple[str, int, bool]:
        """(sha256, size, created): created is False when the same content was already stored. Then, with
        keep_spare, the written copy stays as `self.spare` until LocalStorage.settle: the stored one belongs to
        other jobs, and deleting them before this upload's rows are committed would remove it."""
        try:
            with _no_space_is_full(self.storage.root):
                self.out.close()  # buffered bytes reach the disk here, so a full disk can show up here too
                sha = self.digest.hexdigest()
                final = self.storage.path(sha)
                if final.exists():
                    if keep_spare:
                        self.spare, self.tmp_name = self.tmp_name, ""
                    else:
                        os.unlink(self.tmp_name)
                    return sha, self.size, False
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(self.tmp_name, final)  # atomic: readers never see a half-written file
                return sha, self.size, True
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        if not self.out.closed:
            try:
                self.out.close()
            except OSError:  # the unflushed bytes of a file being thrown away
                pass
        if self.tmp_name and os.path.exists(self.tmp_name):
            os.unlink(self.tmp_name)
