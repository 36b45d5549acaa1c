"""Published weights through torch.hub's cache, served from a local HTTP server: a hash-checked
download, the cache reused, and one sentence when the file cannot be had."""

from __future__ import annotations

import hashlib
import io

import pytest
import torch
from conftest import LocalServer
from torchvision.models import Weights, WeightsEnum

from glimpse.errors import DownloadError
from glimpse.hub import cache_file, torchvision_weights_state


def _weights_enum(url: str) -> WeightsEnum:
    class TinyWeights(WeightsEnum):
        LOCAL = Weights(url=url, transforms=lambda: None, meta={})

    return TinyWeights.LOCAL


@pytest.fixture
def server():
    local = LocalServer()
    yield local
    local.close()


@pytest.fixture
def hub_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub"


def _published(state: dict) -> tuple[bytes, str]:
    """The file's bytes and the name torchvision gives it: ``<name>-<sha256 prefix>.pth``."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    return data, f"tiny-{hashlib.sha256(data).hexdigest()[:8]}.pth"


def test_weights_are_downloaded_hash_checked_and_then_read_from_the_cache(server, hub_dir):
    state = {"weight": torch.arange(6.0).reshape(2, 3)}
    data, name = _published(state)
    server.routes[f"/{name}"] = (200, data, None)
    weights = _weights_enum(server.url(f"/{name}"))

    loaded = torchvision_weights_state(weights)
    assert torch.equal(loaded["weight"], state["weight"])
    assert cache_file(weights.url) == hub_dir / "checkpoints" / name
    assert cache_file(weights.url).read_bytes() == data

    server.routes.clear()
    assert torch.equal(torchvision_weights_state(weights)["weight"], state["weight"])
    assert server.requests == [f"/{name}"]


def test_a_failed_download_names_the_weights_the_cache_file_and_the_way_out(server, hub_dir):
    weights = _weights_enum(server.url("/tiny-0123abcd.pth"))
    with pytest.raises(DownloadError) as raised:
        torchvision_weights_state(weights, without="model.pretrained=null")
    message = str(raised.value)
    assert f"from {weights.url} (" in message and "Not Found" in message
    assert f"place that file at {hub_dir / 'checkpoints' / 'tiny-0123abcd.pth'} by hand" in message
    assert message.endswith("train without them with model.pretrained=null.")


def test_a_corrupt_download_is_refused_by_its_hash(server, hub_dir):
    data, name = _published({"weight": torch.ones(2)})
    server.routes[f"/{name}"] = (200, data[:-1] + b"x", None)
    with pytest.raises(DownloadError, match="Could not download torchvision's"):
        torchvision_weights_state(_weights_enum(server.url(f"/{name}")))
