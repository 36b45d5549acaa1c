"""Downloading and unpacking dataset files safely.

* :func:`download_file` streams a URL into a temporary file beside the target, verifies its
  checksum, and only then renames it into place (``os.replace`` is atomic), so an interrupted
  or corrupted download never leaves a partial or wrong file under the final name. The
  expected md5 may be one value or several (the published checksums of an archive that its
  host re-uploaded).
* :func:`extract_archive` unpacks tar and zip archives, refusing members that would land
  outside the target folder.
* :func:`extract_into` is how a datamodule unpacks a downloaded archive: extracted into a
  hidden temporary folder, then each path it provides renamed into place, so that a path under
  its final name is always whole; an extraction cut short leaves only the temporary folder,
  which the next extraction of that archive deletes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tarfile
import urllib.request
import zipfile
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

from rich.progress import Progress

from glimpse.errors import ConfigError, DataError, DownloadError

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20


def file_digest(path: Path, algorithm: str = "md5") -> str:
    """Hex digest of a file's bytes."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


#: An expected md5: one hex digest, several accepted ones, or None for no check.
MD5 = str | Collection[str] | None


def _accepted(md5: MD5) -> set[str] | None:
    if md5 is None:
        return None
    values = {md5} if isinstance(md5, str) else set(md5)
    if not values:
        raise ConfigError(
            "data.md5 is an empty list, which accepts no file; set null to skip the check."
        )
    return {value.lower() for value in values}


def _expected(md5: MD5) -> str:
    return md5 if isinstance(md5, str) else " or ".join(sorted(md5 or ()))


def verify_file(path: Path, md5: MD5) -> None:
    """Raise :class:`DownloadError` when ``path``'s md5 is not ``md5`` (or not one of them;
    None skips)."""
    accepted = _accepted(md5)
    if accepted is None:
        return
    actual = file_digest(path, "md5")
    if actual not in accepted:
        raise DownloadError(
            f"{path} has md5 {actual}, expected {_expected(md5)}; delete it and run again to "
            "re-download."
        )


def download_file(url: str, destination: Path, md5: MD5 = None, timeout: float = 60.0):
    """Download ``url`` to ``destination`` unless a verified copy is already there.

    ``md5`` is the expected hex digest, a collection of accepted ones, or None (no check).
    Returns ``destination``. Raises :class:`DownloadError` naming the URL when the network
    fails or the downloaded bytes do not have the expected md5; in both cases nothing is left
    at ``destination`` and no temporary file remains.
    """
    destination = Path(destination)
    accepted = _accepted(md5)
    if destination.exists():
        verify_file(destination, md5)
        return destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(f".{destination.name}.{os.getpid()}.part")
    digest = hashlib.md5()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with Progress(transient=True) as progress:
                task = progress.add_task(f"Downloading {destination.name}", total=total)
                for chunk in iter(lambda: response.read(CHUNK_BYTES), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    progress.advance(task, len(chunk))
            if total is not None and out.tell() != total:
                raise DownloadError(
                    f"Download of {url} stopped after {out.tell()} of {total} bytes; run again."
                )
        if accepted is not None and digest.hexdigest() not in accepted:
            raise DownloadError(
                f"Download of {url} has md5 {digest.hexdigest()}, expected {_expected(md5)}; "
                f"the file was rejected. Check data.url, or download it by hand to {destination}."
            )
        os.replace(partial, destination)
    except DownloadError:
        raise
    except OSError as error:
        raise DownloadError(
            f"Could not download {url} to {destination} ({error}). Without network access, "
            f"put the file there by hand."
        ) from error
    finally:
        partial.unlink(missing_ok=True)
    return destination


def _inside(root: Path, member: str) -> bool:
    target = (root / member).resolve()
    return target == root or root in target.parents


def extract_archive(archive: Path, destination: Path) -> Path:
    """Unpack a ``.tar``, ``.tar.gz``, ``.tgz`` or ``.zip`` into ``destination``.

    Raises :class:`~glimpse.errors.DataError` naming the member when one would be written
    outside ``destination`` (absolute paths, ``..``, links pointing out), before anything is
    written.
    """
    archive, destination = Path(archive), Path(destination)
    root = destination.resolve()
    root.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as handle:
            for name in handle.namelist():
                if not _inside(root, name):
                    raise DataError(f"{archive} holds {name!r}, which points outside {root}.")
            handle.extractall(root)
        return destination
    if not tarfile.is_tarfile(archive):
        raise DataError(f"{archive} is neither a tar nor a zip archive; delete it and run again.")
    with tarfile.open(archive) as handle:
        for member in handle.getmembers():
            # A symlink's target is relative to the link's folder; a hard link's linkname is
            # a member name, relative to the archive's root.
            if member.issym():
                link_target = str(Path(member.name).parent / member.linkname)
            elif member.islnk():
                link_target = member.linkname
            else:
                link_target = None
            unsafe_link = link_target is not None and not _inside(root, link_target)
            if not _inside(root, member.name) or unsafe_link:
                raise DataError(f"{archive} holds {member.name!r}, which points outside {root}.")
        handle.extractall(root, filter="data")
    return destination


#: What an extraction in progress (or cut short) is named: ``.<archive name>.<pid>.extracting``.
_EXTRACTING = re.compile(r"^\.(?P<archive>.+)\.(?P<pid>\d+)\.extracting$")

#: Given the folder an archive was extracted into, the ``(extracted path, name in the target
#: folder)`` of what it provides, in the order they are moved into place. It may raise
#: :class:`~glimpse.errors.DataError` to refuse an archive that lacks what it should hold.
Selection = Callable[[Path], Sequence[tuple[Path, str]]]


def top_level(tree: Path) -> list[tuple[Path, str]]:
    """Every top-level entry of the extraction, under its own name."""
    return [(entry, entry.name) for entry in sorted(tree.iterdir())]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_extractions(folder: Path, archive_name: str) -> None:
    """Delete the temporary folders of ``archive_name`` under ``folder`` whose process has ended:
    what a killed extraction leaves."""
    for entry in folder.iterdir():
        match = _EXTRACTING.match(entry.name)
        if match and match["archive"] == archive_name and not _pid_alive(int(match["pid"])):
            log.info("Removing %s, left by an interrupted extraction", entry)
            shutil.rmtree(entry, ignore_errors=True)


def _move(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target``; where ``target`` exists (another archive filled that
    folder, or another process finished the same extraction first), move in only what it lacks
    and keep what it holds."""
    if not target.exists():
        try:
            source.rename(target)
            return
        except OSError:
            if not target.is_dir():
                raise
    if source.is_dir() and target.is_dir():
        for child in sorted(source.iterdir()):
            _move(child, target / child.name)


def extract_into(archive: Path, folder: Path, select: Selection = top_level) -> None:
    """Unpack ``archive`` so that each path it provides appears in ``folder`` whole or not at
    all.

    The archive is extracted by :func:`extract_archive` (which refuses members outside its
    target) into the hidden ``folder/.<archive name>.<pid>.extracting``; ``select`` says which of
    the extracted paths go where, and each is renamed into ``folder`` (within one file system, so
    atomically). A name that ``folder`` already holds is not overwritten: a folder gains the
    entries it lacks, a file is kept. The temporary folder is removed whether extraction
    succeeds or fails, and one left by a process that has ended is removed first.
    """
    archive, folder = Path(archive), Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _remove_stale_extractions(folder, archive.name)
    temporary = folder / f".{archive.name}.{os.getpid()}.extracting"
    shutil.rmtree(temporary, ignore_errors=True)
    try:
        extract_archive(archive, temporary)
        for source, name in select(temporary):
            _move(source, folder / name)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
