"""What the format modules share: the staged :class:`Output` every writer writes
through, image sizes, and paths joined inside a dataset directory."""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import shutil
import struct
import tempfile
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Literal

from mlbook._fs import TEMP_SUFFIX, temp_dir_for
from mlbook.datasets.problems import path_problem
from mlbook.errors import DatasetError

__all__ = ["IMAGE_MODES", "IMAGE_SUFFIXES", "ImageMode", "Output", "image_size", "join_inside"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")

#: How a writer brings the images along: a hard link (a copy when the filesystem
#: cannot link), always a copy, or not at all (``keep``: annotations only).
ImageMode = Literal["link", "copy", "keep"]
IMAGE_MODES: tuple[ImageMode, ...] = ("link", "copy", "keep")


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


class Output:
    """Where a writer puts its files: a staging directory, moved into place only when
    the writer has finished, so a failure leaves the target as it was.

    The staging directory goes where :func:`mlbook._fs.temp_dir_for` says (the
    project's ``.mlbook/tmp/``, else beside the target; run snapshots never see it).
    When the target directory does not exist yet, the staging directory is renamed
    into place in one step; when it exists, each file is moved in by an atomic rename.
    An ``OSError`` while writing (a full disk) becomes one :class:`DatasetError` and
    nothing is written.
    Pass a subclass to :func:`~mlbook.datasets.convert.write_dataset` (``output=``) to
    inject failures in tests.

    Args:
        target: the directory to write, or the file for single-file outputs.
        single_file: ``target`` is one file (a COCO ``.json``, a ``.csv``); relative
            paths then resolve in its folder.
        images: how :meth:`place` brings files along: ``"link"``, ``"copy"``, or
            ``"keep"`` (it does not; only embedded files are written).

    Attributes:
        base: the directory relative paths resolve in.
        file: the target's file name for single-file outputs, else ``None``.
        embedded: relative path -> bytes of files that exist only inside annotation
            files (LabelMe ``imageData``); :meth:`place` writes them.
        linked, copied, written, kept, missing: what :meth:`place` did, file by file.
    """

    def __init__(self, target: Path, single_file: bool = False, images: ImageMode = "link") -> None:
        if images not in IMAGE_MODES:
            raise DatasetError(f"unknown images mode {images!r}; use 'link', 'copy' or 'keep'")
        self.target = target
        self.base = target.parent if single_file else target
        self.file = target.name if single_file else None
        self.images: ImageMode = images
        self.embedded: dict[str, bytes] = {}
        self.linked = self.copied = self.written = self.kept = self.missing = 0
        self._stage: Path | None = None
        self._fresh = False
        self._made: list[Path] = []
        self._folders: set[str] = set()  # folders made in the stage
        self._staged: set[str] = set()  # files written or placed in the stage
        self._unsynced: list[str] = []  # files whose data is not on disk yet

    @property
    def stage(self) -> Path:
        """The staging directory (exists between ``__enter__`` and ``__exit__``)."""
        if self._stage is None:
            raise DatasetError("Output used outside its `with` block")
        return self._stage

    def __enter__(self) -> Output:
        try:
            self._open()
        except OSError as exc:
            failure = self._error(exc)
            self._discard()
            raise failure from exc
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            try:
                self._commit()
            except OSError as error:
                failed = self._error(error)
                self._discard()
                raise failed from error
            return
        failure = self._error(exc) if isinstance(exc, OSError) else None
        self._discard()
        if failure is not None:
            raise failure from exc

    def _open(self) -> None:
        if self.base.exists() and not self.base.is_dir():
            raise DatasetError(f"{self.base}: exists and is not a directory; choose another output")
        missing = [p for p in (self.base, *self.base.parents) if not p.exists()]
        self._fresh = self.base in missing
        for directory in reversed(missing[1:] if self._fresh else missing):
            directory.mkdir()
            self._made.append(directory)
        where = temp_dir_for(self.base if self._fresh else self.base / self.target.name)
        name = f".{self.target.name}."
        self._stage = Path(tempfile.mkdtemp(prefix=name, suffix=TEMP_SUFFIX, dir=where))

    def _sync(self) -> None:
        """Flush every file written into the stage, and the stage's folders, to disk.

        Done once at the end, many files at a time: a file system commits concurrent
        fsyncs together, so 5,000 label files take a fraction of the time one fsync
        each would.
        """
        stage = self.stage

        def flush(relative: str) -> None:
            descriptor = os.open(stage / relative, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            except OSError as exc:
                exc.filename = str(stage / relative)
                raise
            finally:
                os.close(descriptor)

        paths = self._unsynced + sorted(self._folders, key=len, reverse=True) + ["."]
        if len(paths) <= 4:
            for path in paths:
                flush(path)
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=min(32, len(paths))) as pool:
                list(pool.map(flush, paths))
        self._unsynced = []

    def _commit(self) -> None:
        stage = self.stage
        self._sync()
        if self._fresh:
            for directory, _, _ in os.walk(stage):
                os.chmod(directory, 0o777 & ~_umask())
            os.rename(stage, self.base)
            self._stage = None
            return
        for path in sorted(stage.rglob("*")):
            if path.is_file():
                destination = self.base / path.relative_to(stage)
                destination.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, destination)
        shutil.rmtree(stage, ignore_errors=True)
        self._stage = None

    def _discard(self) -> None:
        if self._stage is not None:
            shutil.rmtree(self._stage, ignore_errors=True)
            self._stage = None
        for directory in reversed(self._made):
            with contextlib.suppress(OSError):
                directory.rmdir()
        self._made = []

    def _error(self, exc: OSError) -> DatasetError:
        where = ""
        if exc.filename is not None and self._stage is not None:
            with contextlib.suppress(ValueError):
                where = f" {Path(os.fsdecode(exc.filename)).relative_to(self._stage).as_posix()}"
        reason = exc.strerror or str(exc)
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        advice = " (free some space and run again)" if full else ""
        return DatasetError(
            f"{self.target}: cannot write{where}: {reason}; nothing was written{advice}"
        )

    def _path(self, relative: str) -> str:
        """The stage path of ``relative`` (checked), its folder made."""
        problem = path_problem(relative)
        if problem is not None:
            raise DatasetError(f"{self.target}: cannot write {relative!r}: {problem}")
        relative = posixpath.normpath(relative)
        folder = posixpath.dirname(relative)
        if folder and folder not in self._folders:
            os.makedirs(self.stage / folder, exist_ok=True)
            while folder and folder not in self._folders:
                self._folders.add(folder)
                folder = posixpath.dirname(folder)
        return relative

    def write(self, relative: str, data: bytes | Iterable[bytes]) -> None:
        """Write a file at ``relative`` (inside :attr:`base`); every file written is
        flushed to disk before the output is moved into place."""
        relative = self._path(relative)
        path = f"{self.stage}/{relative}"
        try:
            with open(path, "wb") as handle:
                if isinstance(data, bytes):
                    handle.write(data)
                else:
                    handle.writelines(data)
        except OSError as exc:
            exc.filename = path
            raise
        self._staged.add(relative)
        self._unsynced.append(relative)

    def place(
        self, source_root: Path | None, relative: str, destination: str | None = None
    ) -> bool:
        """Bring the file ``source_root/relative`` to ``destination`` (default: the same
        relative path), as a hard link or a copy (nothing under ``"keep"``); a file
        embedded in the source's annotations is written. A file already there (the
        dataset is written where it is) is left alone. Returns False when the source is
        missing.
        """
        destination = posixpath.normpath(destination or relative)
        problem = path_problem(destination)
        if problem is not None:
            raise DatasetError(f"{self.target}: cannot write {destination!r}: {problem}")
        if destination in self._staged:
            return True
        if relative in self.embedded and (
            source_root is None or not os.path.isfile(source_root / relative)
        ):
            self.write(destination, self.embedded[relative])
            self.written += 1
            return True
        if self.images == "keep":
            self.kept += 1
            return True
        if source_root is None or path_problem(relative) is not None:
            self.missing += 1
            return False
        source = f"{source_root}/{relative}"
        if not self._fresh:
            with contextlib.suppress(OSError):
                if os.path.samefile(source, self.base / destination):
                    return True  # the dataset is written where it is
        if not os.path.isfile(source):
            self.missing += 1
            return False
        staged = f"{self.stage}/{self._path(destination)}"
        self._staged.add(destination)
        if self.images == "link":
            try:
                os.link(source, staged)
            except OSError:
                pass
            else:
                self.linked += 1
                return True
        try:
            shutil.copyfile(source, staged)
        except OSError as exc:
            exc.filename = staged
            raise
        self._unsynced.append(destination)
        self.copied += 1
        return True


def join_inside(folder: str, relative: str) -> str:
    """``folder/relative`` normalised, as a POSIX path relative to a dataset directory
    (``folder`` is already inside it, ``""`` for the directory itself). The result may
    leave the directory; check it with :func:`~mlbook.datasets.problems.path_problem`.
    """
    if not relative or relative.startswith("/"):
        return relative
    return posixpath.normpath(posixpath.join(folder, relative) if folder else relative)


def _jpeg_size(handle: BinaryIO) -> tuple[int, int] | None:
    """The size in a JPEG's start-of-frame segment, reading only the segment headers."""
    handle.seek(2)
    while True:
        marker = handle.read(2)
        while len(marker) == 2 and marker[0] == 0xFF and marker[1] == 0xFF:
            marker = marker[1:] + handle.read(1)  # fill bytes
        if len(marker) != 2 or marker[0] != 0xFF:
            return None
        kind = marker[1]
        if kind in (0x01, *range(0xD0, 0xD8)):
            continue  # markers without a length
        length_bytes = handle.read(2)
        if len(length_bytes) != 2:
            return None
        length = struct.unpack(">H", length_bytes)[0]
        if 0xC0 <= kind <= 0xCF and kind not in (0xC4, 0xC8, 0xCC):
            frame = handle.read(5)
            if len(frame) != 5:
                return None
            height, width = struct.unpack(">HH", frame[1:])
            return (width, height) if width and height else None
        if kind in (0xD9, 0xDA) or length < 2:
            return None  # end of image or of the headers without a frame
        handle.seek(length - 2, os.SEEK_CUR)


def _header_size(path: Path | str) -> tuple[int, int] | bool | None:
    """``(width, height)`` of a JPEG or PNG read from its first bytes; ``None`` when it
    is one but broken; False for other kinds (then Pillow reads it)."""
    with open(path, "rb") as handle:
        head = handle.read(26)
        if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
            width, height = struct.unpack(">II", head[16:24])
            return (width, height) if width and height else None
        if head.startswith(b"\xff\xd8"):
            return _jpeg_size(handle)
    return False


def image_size(path: Path) -> tuple[int, int] | None:
    """``(width, height)`` read from the image header, or ``None`` when unreadable.

    JPEG and PNG headers are read directly (a few hundred bytes, no decoding); other
    kinds through Pillow.

    Raises:
        DatasetError: the image is not JPEG or PNG and Pillow is not installed.
    """
    try:
        size = _header_size(path)
    except (OSError, struct.error):
        return None
    if size is not False:
        return size if isinstance(size, tuple) else None
    try:
        from PIL import Image
    except ImportError:
        raise DatasetError(
            "reading image sizes needs Pillow; install it with `pip install mlbook[images]`"
        ) from None
    try:
        with Image.open(path) as image:
            return int(image.width), int(image.height)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
