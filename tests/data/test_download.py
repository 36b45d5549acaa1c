"""download_file against a local HTTP server, extract_archive's path checks and extract_into's
atomic placing."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import LocalServer as Server
from conftest import md5

from glimpse.data import download as download_module
from glimpse.data.download import DownloadError, download_file, extract_archive, extract_into
from glimpse.data.text.char_text import CharTextDataModule
from glimpse.errors import ConfigError, DataError

GOOD = b"".join(b"line %d of the good file \xc3\xa9\n" % i for i in range(400))
TEXT = "".join(f"Speaker {i % 7}:\nWords, words, words number {i}.\n\n" for i in range(120))


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_good_file_downloads_atomically(server: Server, tmp_path: Path):
    server.routes["/good.bin"] = (200, GOOD, None)
    destination = tmp_path / "deep" / "folder" / "good.bin"
    result = download_file(server.url("/good.bin"), destination, md5=md5(GOOD).upper())
    assert result == destination
    assert destination.read_bytes() == GOOD
    assert _names(destination.parent) == ["good.bin"]  # no .part file left
    assert server.requests == ["/good.bin"]


def test_download_without_md5_keeps_bytes(server: Server, tmp_path: Path):
    server.routes["/good.bin"] = (200, GOOD, None)
    destination = tmp_path / "good.bin"
    download_file(server.url("/good.bin"), destination)
    assert destination.read_bytes() == GOOD
    assert _names(tmp_path) == ["good.bin"]


def test_corrupted_download_raises_and_leaves_nothing(server: Server, tmp_path: Path):
    corrupted = GOOD[:100] + b"X" + GOOD[101:]
    server.routes["/file.bin"] = (200, corrupted, None)
    destination = tmp_path / "file.bin"
    url = server.url("/file.bin")
    with pytest.raises(DownloadError, match="md5") as info:
        download_file(url, destination, md5=md5(GOOD))
    assert url in str(info.value)
    assert not destination.exists()
    assert _names(tmp_path) == []


def test_interrupted_download_raises_and_leaves_nothing(server: Server, tmp_path: Path):
    body = GOOD[: len(GOOD) // 2]
    server.routes["/cut.bin"] = (200, body, len(GOOD))  # promises more than it sends
    destination = tmp_path / "cut.bin"
    url = server.url("/cut.bin")
    with pytest.raises(DownloadError) as info:
        download_file(url, destination, md5=md5(GOOD), timeout=10)
    assert url in str(info.value)
    assert not destination.exists()
    assert _names(tmp_path) == []


def test_interrupted_download_without_md5_raises(server: Server, tmp_path: Path):
    server.routes["/cut.bin"] = (200, GOOD[:500], len(GOOD))
    destination = tmp_path / "cut.bin"
    with pytest.raises(DownloadError, match="stopped"):
        download_file(server.url("/cut.bin"), destination, timeout=10)
    assert _names(tmp_path) == []


def test_404_raises_naming_the_url(server: Server, tmp_path: Path):
    destination = tmp_path / "missing.bin"
    url = server.url("/missing.bin")
    with pytest.raises(DownloadError) as info:
        download_file(url, destination, md5=md5(GOOD))
    assert url in str(info.value)
    assert "404" in str(info.value)
    assert server.requests == ["/missing.bin"]
    assert _names(tmp_path) == []


def test_unreachable_server_raises_download_error(tmp_path: Path):
    probe = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = probe.server_address[1]
    probe.server_close()  # nothing listens on this port now
    url = f"http://127.0.0.1:{port}/x.bin"
    with pytest.raises(DownloadError, match="by hand") as info:
        download_file(url, tmp_path / "x.bin", timeout=5)
    assert url in str(info.value)
    assert _names(tmp_path) == []


def test_existing_verified_destination_is_not_downloaded_again(server: Server, tmp_path: Path):
    server.routes["/good.bin"] = (200, b"something else", None)
    destination = tmp_path / "good.bin"
    destination.write_bytes(GOOD)
    assert download_file(server.url("/good.bin"), destination, md5=md5(GOOD)) == destination
    assert server.requests == []
    assert destination.read_bytes() == GOOD


def test_existing_destination_with_wrong_md5_raises_and_is_kept(server: Server, tmp_path: Path):
    server.routes["/good.bin"] = (200, GOOD, None)
    destination = tmp_path / "good.bin"
    destination.write_bytes(b"stale local copy")
    with pytest.raises(DownloadError, match="md5") as info:
        download_file(server.url("/good.bin"), destination, md5=md5(GOOD))
    assert str(destination) in str(info.value)
    assert server.requests == []
    assert destination.read_bytes() == b"stale local copy"
    assert _names(tmp_path) == ["good.bin"]


def test_shakespeare_datamodule_downloads_from_url(server: Server, tmp_path: Path):
    data = TEXT.encode("utf-8")
    server.routes["/tiny/input.txt"] = (200, data, None)
    dm = CharTextDataModule(
        corpus="shakespeare",
        data_dir=str(tmp_path),
        url=server.url("/tiny/input.txt"),
        md5=md5(data),
        seq_len=16,
        batch_size=2,
    )
    dm.prepare_data()
    target = tmp_path / "tinyshakespeare" / "input.txt"
    assert target.read_bytes() == data
    assert _names(target.parent) == ["input.txt"]
    dm.setup("fit")
    assert dm.spec.metadata["num_chars"] == len(TEXT)
    assert dm.spec.metadata["corpus"] == "shakespeare"
    assert dm.spec.metadata["sha256"] == hashlib.sha256(data).hexdigest()
    inputs, targets = next(iter(dm.train_dataloader()))
    assert inputs.shape == targets.shape == (2, 16)
    dm.prepare_data()  # second call: already there and verified
    assert server.requests == ["/tiny/input.txt"]


def test_shakespeare_datamodule_with_wrong_md5_raises(server: Server, tmp_path: Path):
    data = TEXT.encode("utf-8")
    server.routes["/tiny/input.txt"] = (200, data, None)
    dm = CharTextDataModule(
        corpus="shakespeare",
        data_dir=str(tmp_path),
        url=server.url("/tiny/input.txt"),
        md5=md5(b"not the text"),
    )
    with pytest.raises(DownloadError, match="md5"):
        dm.prepare_data()
    assert _names(tmp_path / "tinyshakespeare") == []


# ---- extract_archive -------------------------------------------------------------------------

FILES = {"a.txt": b"alpha\n", "sub/b.txt": b"beta\n", "sub/deeper/c.bin": bytes(range(256))}


def _add_file(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _add_link(tar: tarfile.TarFile, name: str, target: str, kind: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    tar.addfile(info)


def _tar(path: Path, build, mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:
        build(tar)
    return path


def _assert_extracted(destination: Path) -> None:
    for name, data in FILES.items():
        assert (destination / name).read_bytes() == data


def _files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("mode", ["w:gz", "w"])
def test_extracts_good_tar(tmp_path: Path, mode: str):
    def build(tar):
        for name, data in FILES.items():
            _add_file(tar, name, data)

    archive = _tar(tmp_path / ("good.tar.gz" if mode == "w:gz" else "good.tar"), build, mode)
    destination = tmp_path / "out"
    assert extract_archive(archive, destination) == destination
    _assert_extracted(destination)


def test_extracts_good_zip(tmp_path: Path):
    archive = tmp_path / "good.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for name, data in FILES.items():
            handle.writestr(name, data)
    destination = tmp_path / "out"
    assert extract_archive(archive, destination) == destination
    _assert_extracted(destination)


def test_extracts_tar_with_links_inside_destination(tmp_path: Path):
    def build(tar):
        for name, data in FILES.items():
            _add_file(tar, name, data)
        _add_link(tar, "sub/deeper/sym", "../b.txt", tarfile.SYMTYPE)
        _add_link(tar, "sub/deeper/hard", "a.txt", tarfile.LNKTYPE)  # relative to the root

    destination = tmp_path / "out"
    extract_archive(_tar(tmp_path / "links.tar.gz", build), destination)
    _assert_extracted(destination)
    assert (destination / "sub/deeper/sym").is_symlink()
    assert (destination / "sub/deeper/sym").read_bytes() == FILES["sub/b.txt"]
    assert (destination / "sub/deeper/hard").read_bytes() == FILES["a.txt"]


@pytest.mark.parametrize("evil", ["../evil.txt", "sub/../../evil.txt"])
def test_refuses_tar_member_outside_destination(tmp_path: Path, evil: str):
    def build(tar):
        _add_file(tar, "a.txt", b"fine\n")
        _add_file(tar, evil, b"pwned\n")

    archive = _tar(tmp_path / "evil.tar.gz", build)
    destination = tmp_path / "out"
    with pytest.raises(ValueError, match=f"'{evil}'"):
        extract_archive(archive, destination)
    assert not (tmp_path / "evil.txt").exists()
    assert _files_under(destination) == []  # refused before anything was written
    assert _names(tmp_path) == ["evil.tar.gz", "out"]


def test_refuses_tar_member_with_absolute_path(tmp_path: Path):
    outside = tmp_path / "abs" / "evil.txt"
    archive = _tar(tmp_path / "abs.tar", lambda tar: _add_file(tar, str(outside), b"x"), "w")
    with pytest.raises(ValueError, match="evil.txt"):
        extract_archive(archive, tmp_path / "out")
    assert not outside.exists()
    assert _files_under(tmp_path / "out") == []


def test_refuses_zip_member_outside_destination(tmp_path: Path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("a.txt", b"fine\n")
        handle.writestr("../evil.txt", b"pwned\n")
    destination = tmp_path / "out"
    with pytest.raises(ValueError, match="'../evil.txt'"):
        extract_archive(archive, destination)
    assert not (tmp_path / "evil.txt").exists()
    assert _files_under(destination) == []
    assert _names(tmp_path) == ["evil.zip", "out"]


@pytest.mark.parametrize("target", ["../outside.txt", "/etc/passwd", "../../x"])
def test_refuses_tar_symlink_pointing_outside(tmp_path: Path, target: str):
    def build(tar):
        _add_file(tar, "a.txt", b"fine\n")
        _add_link(
            tar, "sub/link", "../" + target if target.startswith("..") else target, tarfile.SYMTYPE
        )

    archive = _tar(tmp_path / "symlink.tar.gz", build)
    destination = tmp_path / "out"
    with pytest.raises(ValueError, match="'sub/link'"):
        extract_archive(archive, destination)
    assert _files_under(destination) == []
    assert _names(tmp_path) == ["out", "symlink.tar.gz"]


def test_refuses_tar_hard_link_pointing_outside(tmp_path: Path):
    # A hard link's linkname is relative to the archive root, not to the member's folder:
    # "../secret" from "sub/dir/hard" names <destination>/../secret.
    secret = tmp_path / "secret"
    secret.write_bytes(b"secret\n")

    def build(tar):
        _add_file(tar, "a.txt", b"fine\n")
        _add_link(tar, "sub/dir/hard", "../secret", tarfile.LNKTYPE)

    archive = _tar(tmp_path / "hardlink.tar.gz", build)
    destination = tmp_path / "out"
    with pytest.raises(ValueError, match="'sub/dir/hard'"):
        extract_archive(archive, destination)
    assert _files_under(destination) == []
    assert secret.read_bytes() == b"secret\n"


def test_refuses_file_that_is_no_archive(tmp_path: Path):
    path = tmp_path / "plain.txt"
    path.write_text("not an archive\n")
    with pytest.raises(DataError, match="neither"):
        extract_archive(path, tmp_path / "out")


def test_an_empty_list_of_md5s_is_refused(server: Server, tmp_path: Path):
    with pytest.raises(ConfigError, match="data.md5 is an empty list"):
        download_file(server.url("/good.bin"), tmp_path / "good.bin", md5=[])


# extract_into ------------------------------------------------------------------------------


def _release(tmp_path: Path) -> Path:
    """A tar.gz holding ``release/`` (FILES) and ``notes.txt`` at its top."""

    def build(tar):
        for name, data in FILES.items():
            _add_file(tar, f"release/{name}", data)
        _add_file(tar, "notes.txt", b"notes\n")

    return _tar(tmp_path / "release.tar.gz", build)


def _dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)


def test_extract_into_moves_every_top_level_entry_and_leaves_no_temporary(tmp_path: Path):
    archive, folder = _release(tmp_path), tmp_path / "data"
    extract_into(archive, folder)
    assert _names(folder) == ["notes.txt", "release"]
    _assert_extracted(folder / "release")


def test_extract_into_places_what_select_names_in_its_order(tmp_path: Path, monkeypatch):
    archive, folder = _release(tmp_path), tmp_path / "data"
    moved = []
    real_move = download_module._move

    def recording(source: Path, target: Path) -> None:
        moved.append(target.name)
        real_move(source, target)

    monkeypatch.setattr(download_module, "_move", recording)
    extract_into(
        archive,
        folder,
        lambda tree: [(tree / "notes.txt", "z.txt"), (tree / "release" / "sub", "sub")],
    )
    assert moved == ["z.txt", "sub"]
    assert _names(folder) == ["sub", "z.txt"]
    assert (folder / "sub" / "b.txt").read_bytes() == FILES["sub/b.txt"]


def test_extract_into_keeps_what_the_folder_holds_and_adds_what_it_lacks(tmp_path: Path):
    archive, folder = _release(tmp_path), tmp_path / "data"
    (folder / "release" / "sub").mkdir(parents=True)
    (folder / "release" / "sub" / "b.txt").write_bytes(b"mine\n")
    (folder / "notes.txt").write_bytes(b"my notes\n")
    extract_into(archive, folder)
    assert (folder / "release" / "sub" / "b.txt").read_bytes() == b"mine\n"
    assert (folder / "notes.txt").read_bytes() == b"my notes\n"
    assert (folder / "release" / "a.txt").read_bytes() == FILES["a.txt"]
    assert (folder / "release" / "sub" / "deeper" / "c.bin").read_bytes() == FILES[
        "sub/deeper/c.bin"
    ]
    assert _names(folder) == ["notes.txt", "release"]


def test_an_interrupted_extract_into_leaves_nothing_under_the_final_names(
    tmp_path: Path, monkeypatch
):
    archive, folder = _release(tmp_path), tmp_path / "data"

    def interrupted(source: Path, destination: Path) -> Path:
        (destination / "release").mkdir(parents=True)
        (destination / "release" / "a.txt").write_bytes(b"al")
        raise KeyboardInterrupt

    monkeypatch.setattr(download_module, "extract_archive", interrupted)
    with pytest.raises(KeyboardInterrupt):
        extract_into(archive, folder)
    assert _names(folder) == []


def test_extract_into_removes_what_an_ended_process_left_and_nothing_else(tmp_path: Path):
    archive, folder = _release(tmp_path), tmp_path / "data"
    stale = folder / f".release.tar.gz.{_dead_pid()}.extracting"
    (stale / "release").mkdir(parents=True)
    alive = folder / f".release.tar.gz.{os.getppid()}.extracting"
    other = folder / f".other.zip.{_dead_pid()}.extracting"
    alive.mkdir()
    other.mkdir()
    extract_into(archive, folder)
    assert not stale.exists() and alive.is_dir() and other.is_dir()
    _assert_extracted(folder / "release")


def test_extract_into_refuses_a_member_outside_and_places_nothing(tmp_path: Path):
    def build(tar):
        _add_file(tar, "release/a.txt", b"alpha\n")
        _add_file(tar, "../evil.txt", b"pwned\n")

    archive, folder = _tar(tmp_path / "evil.tar.gz", build), tmp_path / "data"
    with pytest.raises(DataError, match="'../evil.txt', which points outside"):
        extract_into(archive, folder)
    assert _names(folder) == [] and not (tmp_path / "evil.txt").exists()


def test_a_selection_refusing_the_archive_places_nothing(tmp_path: Path):
    archive, folder = _release(tmp_path), tmp_path / "data"

    def refuse(tree: Path) -> list[tuple[Path, str]]:
        raise DataError(f"{archive} holds no train/ folder.")

    with pytest.raises(DataError, match="holds no train/ folder"):
        extract_into(archive, folder, refuse)
    assert _names(folder) == []
