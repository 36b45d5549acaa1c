"""The WebDataset tar-shard reader on shards written by the test: from disk and from a local
HTTP server, split by rank and worker, shuffled per epoch, resampled, and its errors."""

from __future__ import annotations

import io
import json
import logging
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from glimpse.data.formats.tar_shards import (
    ShardError,
    TarShardPairs,
    check_local_shards,
    expand_shards,
    image_id,
    read_captions,
)

SIZE = 16
TO_TENSOR = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])


def image_bytes(index: int, format: str = "JPEG") -> bytes:
    """A ``SIZE`` square image filled with a grey level that encodes ``index``."""
    buffer = io.BytesIO()
    Image.fromarray(np.full((SIZE, SIZE, 3), 10 * index % 250, np.uint8)).save(buffer, format)
    return buffer.getvalue()


def tar_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def write_shards(folder: Path, shards: int = 3, per_shard: int = 4) -> list[str]:
    """``shards`` tar files ``pairs-<k>.tar`` of ``per_shard`` samples each: sample ``i``
    (numbered over all shards) is ``<i>.jpg`` with ``<i>.txt`` "caption <i>", except that
    odd ones are a png with a ``.json`` caption. Returns the captions in shard order."""
    folder.mkdir(parents=True, exist_ok=True)
    captions = []
    for k in range(shards):
        members = {}
        for i in range(k * per_shard, (k + 1) * per_shard):
            key = f"{i:05d}"
            captions.append(f"caption {i}")
            if i % 2:
                members[f"{key}.png"] = image_bytes(i, "PNG")
                members[f"{key}.json"] = json.dumps({"caption": captions[-1]}).encode()
            else:
                members[f"{key}.jpg"] = image_bytes(i)
                members[f"{key}.txt"] = captions[-1].encode()
        (folder / f"pairs-{k}.tar").write_bytes(tar_bytes(members))
    return captions


def pattern(folder: Path, shards: int = 3) -> str:
    return str(folder / f"pairs-{{0..{shards - 1}}}.tar")


def read_all(dataset: TarShardPairs) -> list[tuple[torch.Tensor, str, int]]:
    return list(dataset)


def test_reads_every_pair_of_local_shards_in_order(tmp_path):
    captions = write_shards(tmp_path)
    urls = expand_shards(pattern(tmp_path))
    assert urls == [str(tmp_path / f"pairs-{k}.tar") for k in range(3)]
    items = read_all(TarShardPairs(urls, TO_TENSOR))
    assert [caption for _, caption, _ in items] == captions
    for i, (image, _, ident) in enumerate(items):
        assert image.shape == (3, SIZE, SIZE)
        assert abs(float(image.mean()) * 255 - 10 * i) < 3  # the image of its own caption
        assert ident == image_id(urls[i // 4], f"{i:05d}")
    assert len({ident for *_, ident in items}) == len(items)


def test_reads_shards_from_an_http_server(server, tmp_path):
    captions = write_shards(tmp_path, shards=2)
    for k in range(2):
        server.routes[f"/cc/pairs-{k}.tar"] = (
            200,
            (tmp_path / f"pairs-{k}.tar").read_bytes(),
            None,
        )
    urls = expand_shards(server.url("/cc/pairs-{0..1}.tar"))
    items = read_all(TarShardPairs(urls, TO_TENSOR))
    assert [caption for _, caption, _ in items] == captions
    assert server.requests == ["/cc/pairs-0.tar", "/cc/pairs-1.tar"]
    assert read_captions(urls, limit=3) == captions[:3]


def test_a_bad_url_or_a_broken_shard_raises_naming_it(server):
    missing = server.url("/absent.tar")
    with pytest.raises(ShardError, match=f"Could not open the shard {missing} .*404"):
        read_all(TarShardPairs([missing], TO_TENSOR))
    server.routes["/garbage.tar"] = (200, b"not a tar archive at all" * 40, None)
    with pytest.raises(ShardError, match="garbage.tar cannot be read as a tar archive"):
        read_all(TarShardPairs([server.url("/garbage.tar")], TO_TENSOR))
    with pytest.raises(ShardError, match="Could not open the shard /nowhere/x.tar"):
        read_all(TarShardPairs(["/nowhere/x.tar"], TO_TENSOR))


def test_missing_local_shards_are_counted_and_named(tmp_path):
    write_shards(tmp_path, shards=2)
    urls = expand_shards(pattern(tmp_path, shards=4))
    with pytest.raises(FileNotFoundError, match=r"2 of the 4 shards of train .*pairs-2.tar"):
        check_local_shards(urls, "train")
    check_local_shards([*urls[:2], "http://host/x.tar"], "train")  # URLs are checked when read


def test_shards_are_dealt_out_by_rank_and_worker_once_each(monkeypatch):
    urls = [f"s{k}.tar" for k in range(10)]
    dataset = TarShardPairs(urls, TO_TENSOR, shuffle=True, seed=3)
    seen = []
    for rank in range(2):
        for worker in range(2):
            for name, value in (("RANK", rank), ("WORLD_SIZE", 2), ("WORKER", worker)):
                monkeypatch.setenv(name, str(value))
            monkeypatch.setenv("NUM_WORKERS", "2")
            seen.append(dataset.worker_shards(epoch=0))
    assert sorted(u for part in seen for u in part) == sorted(urls)
    assert all(len(part) in (2, 3) for part in seen)


def test_shard_order_changes_with_the_epoch_and_not_with_the_process():
    urls = [f"s{k}.tar" for k in range(20)]
    first = TarShardPairs(urls, TO_TENSOR, shuffle=True, seed=0).worker_shards(epoch=0)
    assert TarShardPairs(urls, TO_TENSOR, shuffle=True, seed=0).worker_shards(epoch=0) == first
    assert TarShardPairs(urls, TO_TENSOR, shuffle=True, seed=0).worker_shards(epoch=1) != first
    assert sorted(first) == sorted(urls) and first != urls
    assert TarShardPairs(urls, TO_TENSOR).worker_shards(epoch=5) == urls


def test_training_reads_each_pair_once_per_epoch_shuffled_across_workers(tmp_path):
    captions = write_shards(tmp_path, shards=4, per_shard=3)
    dataset = TarShardPairs(
        expand_shards(pattern(tmp_path, 4)), TO_TENSOR, shuffle=True, shuffle_buffer=5
    )
    loader = DataLoader(dataset, batch_size=None, num_workers=2, persistent_workers=True)
    epochs = [[caption for _, caption, _ in loader] for _ in range(2)]
    for epoch in epochs:
        assert sorted(epoch) == sorted(captions)
    assert epochs[0] != captions and epochs[0] != epochs[1]


def test_samples_per_epoch_draws_shards_and_gives_every_worker_whole_batches(tmp_path):
    write_shards(tmp_path, shards=2, per_shard=3)
    dataset = TarShardPairs(
        expand_shards(pattern(tmp_path, 2)),
        TO_TENSOR,
        shuffle=True,
        samples_per_epoch=10,
        multiple_of=4,
    )
    loader = DataLoader(dataset, batch_size=4, num_workers=2, collate_fn=list)
    batches = list(loader)
    assert [len(b) for b in batches] == [4] * 4  # 10 samples over 2 workers: 2 batches each
    assert len(list(dataset)) == 12  # one process: 10 rounded up to whole batches


def test_samples_lacking_a_caption_or_a_readable_image_raise_or_are_skipped(tmp_path, caplog):
    members = {
        "a.jpg": image_bytes(1),
        "a.txt": b"kept",
        "b.jpg": image_bytes(2),
        "c.jpg": b"\xff\xd8 not a jpeg",
        "c.txt": b"broken image",
        "d.txt": b"no image",
        "e.jpg": image_bytes(3),
        "e.txt": b"   ",
        "f.jpg": image_bytes(4),
        "f.json": b"{broken",
    }
    shard = tmp_path / "bad.tar"
    shard.write_bytes(tar_bytes(members))
    with pytest.raises(ValueError, match=f"sample b of the shard {shard} has no caption"):
        read_all(TarShardPairs([str(shard)], TO_TENSOR))
    lenient = TarShardPairs([str(shard)], TO_TENSOR, skip_bad=True)
    with caplog.at_level(logging.WARNING, logger="glimpse.data.formats.tar_shards"):
        items = read_all(lenient)
    assert [caption for _, caption, _ in items] == ["kept"]
    assert caplog.text.count("Skipped the sample") == 5
    assert "sample c of the shard" in caplog.text and "cannot be decoded" in caplog.text
    assert "sample d of the shard" in caplog.text and "has no image" in caplog.text
    assert "sample f of the shard" in caplog.text and "unreadable" in caplog.text


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="names no shard"):
        expand_shards([])
    with pytest.raises(ValueError, match="at least one shard"):
        TarShardPairs([], TO_TENSOR)
    with pytest.raises(ValueError, match="samples_per_epoch=0"):
        TarShardPairs(["a.tar"], TO_TENSOR, samples_per_epoch=0)
    with pytest.raises(ValueError, match="split_by='keys'"):
        TarShardPairs(["a.tar"], TO_TENSOR, split_by="keys")


def test_evaluation_deals_samples_to_ranks_so_each_gets_some_of_a_single_shard(
    tmp_path, monkeypatch
):
    captions = write_shards(tmp_path, shards=1, per_shard=7)
    dataset = TarShardPairs([str(tmp_path / "pairs-0.tar")], TO_TENSOR, split_by="samples")
    seen = []
    for rank in range(3):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "3")
        seen.append([caption for _, caption, _ in dataset])
    assert [len(part) for part in seen] == [3, 2, 2]
    assert sorted(c for part in seen for c in part) == sorted(captions)
