"""StreamBatches (truncated BPTT) and RandomWindows, on tokens = arange(N)."""

from __future__ import annotations

import pytest
import torch

from glimpse.data.text.streams import RandomWindows, StreamBatches

CASES = [  # (N, B, T)
    (101, 1, 10),
    (100, 4, 5),
    (1000, 3, 7),
    (257, 8, 4),
    (64, 2, 31),
    (50, 7, 1),
]


def _batches(dataset):
    return list(iter(dataset))


@pytest.mark.parametrize(("n", "b", "t"), CASES)
def test_stream_batches_continue_each_other_in_every_row(n, b, t):
    batches = _batches(StreamBatches(torch.arange(n), b, t))
    assert len(batches) >= 1
    for inputs, targets in batches:
        assert inputs.shape == targets.shape == (b, t)
        assert inputs.dtype == torch.int64
    for (prev, _), (nxt, _) in zip(batches, batches[1:], strict=False):
        assert torch.equal(nxt[:, 0], prev[:, -1] + 1)
    rows = torch.cat([inputs for inputs, _ in batches], dim=1)
    for row in rows:
        assert torch.equal(row, torch.arange(row[0], row[0] + len(row)))


@pytest.mark.parametrize(("n", "b", "t"), CASES)
def test_stream_targets_are_next_characters(n, b, t):
    for inputs, targets in StreamBatches(torch.arange(n), b, t):
        assert torch.equal(targets, inputs + 1)


@pytest.mark.parametrize(("n", "b", "t"), CASES)
def test_stream_rows_are_disjoint_and_start_at_multiples_of_stream_length(n, b, t):
    stream_len = (n - 1) // b
    batches = _batches(StreamBatches(torch.arange(n), b, t))
    rows = torch.cat([inputs for inputs, _ in batches], dim=1)
    assert torch.equal(rows[:, 0], torch.arange(b) * stream_len)
    assert rows.shape[1] <= stream_len
    flat = rows.flatten().tolist()
    assert len(set(flat)) == len(flat)
    # each row's last target stays inside its own stream, before the next stream's first input
    last_targets = batches[-1][1][:, -1]
    assert torch.all(last_targets <= rows[:, 0] + stream_len)
    assert int(last_targets.max()) <= n - 1


@pytest.mark.parametrize(("n", "b", "t"), CASES)
def test_stream_len_and_unused_count(n, b, t):
    dataset = StreamBatches(torch.arange(n), b, t)
    batches = _batches(dataset)
    assert len(dataset) == len(batches)
    assert len(dataset) == ((n - 1) // b) // t
    covered = {int(x) for inputs, _ in batches for x in inputs.flatten()}
    assert dataset.unused == n - len(covered)
    assert 0 <= dataset.unused < b * (t + 1)


@pytest.mark.parametrize(("n", "b", "t"), [(1000, 3, 7), (101, 1, 10), (257, 4, 4), (33, 2, 3)])
def test_stream_ranks_split_the_single_process_streams(n, b, t):
    tokens = torch.arange(n)
    ranks = [StreamBatches(tokens, b, t, rank=r, world_size=2) for r in range(2)]
    single = StreamBatches(tokens, 2 * b, t)
    assert len(ranks[0]) == len(ranks[1]) == len(single)
    assert ranks[0].unused == ranks[1].unused == single.unused
    assert ranks[0].unused < 2 * b * (t + 1)
    per_rank = [_batches(dataset) for dataset in ranks]
    whole = _batches(single)
    assert len(per_rank[0]) == len(per_rank[1]) == len(whole)
    for (x0, y0), (x1, y1), (x, y) in zip(*per_rank, whole, strict=True):
        assert x0.shape == x1.shape == (b, t)
        assert torch.equal(torch.cat([x0, x1]), x)
        assert torch.equal(torch.cat([y0, y1]), y)
    for batches in per_rank:
        for (prev, _), (nxt, _) in zip(batches, batches[1:], strict=False):
            assert torch.equal(nxt[:, 0], prev[:, -1] + 1)
    # rank 0 owns the first streams of the text
    assert int(per_rank[0][0][0].max()) < int(per_rank[1][0][0].min())


@pytest.mark.parametrize(
    ("n", "b", "t"),
    [(10, 1, 10), (10, 2, 5), (5, 1, 5), (1, 1, 1), (0, 1, 1)],
)
def test_stream_batches_too_short_raise(n, b, t):
    with pytest.raises(ValueError, match="seq_len"):
        StreamBatches(torch.arange(n), b, t)


def test_stream_batches_too_short_for_world_size_raise():
    StreamBatches(torch.arange(20), 2, 5)  # enough for one process ...
    with pytest.raises(ValueError, match="streams"):
        StreamBatches(torch.arange(20), 2, 5, rank=1, world_size=2)  # ... not for two


def test_stream_batches_shortest_valid_input():
    ((inputs, targets),) = _batches(StreamBatches(torch.arange(11), 2, 5))
    assert inputs.tolist() == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    assert targets.tolist() == [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]]


@pytest.mark.parametrize(("n", "t"), [(101, 10), (100, 10), (57, 8), (9, 8)])
def test_sequential_windows_cover_text_in_order(n, t):
    windows = RandomWindows(torch.arange(n), t, None, random=False)
    assert len(windows) == (n - 1) // t
    items = [windows[i] for i in range(len(windows))]
    for i, (inputs, targets) in enumerate(items):
        assert torch.equal(inputs, torch.arange(i * t, (i + 1) * t))
        assert torch.equal(targets, inputs + 1)
    scored = torch.cat([targets for _, targets in items])
    assert torch.equal(scored, torch.arange(1, len(windows) * t + 1))
    assert n - 1 - len(scored) < t


def test_random_windows_are_valid_contiguous_slices():
    n, t = 50, 8
    windows = RandomWindows(torch.arange(n), t, 200, random=True)
    assert len(windows) == 200
    starts = set()
    for i in range(len(windows)):
        inputs, targets = windows[i]
        assert inputs.shape == targets.shape == (t,)
        start = int(inputs[0])
        assert start >= 0
        assert int(targets[-1]) <= n - 1
        assert torch.equal(inputs, torch.arange(start, start + t))
        assert torch.equal(targets, inputs + 1)
        starts.add(start)
    assert len(starts) > 10  # offsets really vary


def test_random_windows_reach_both_ends():
    n, t = 12, 8  # four valid starts: 0 .. 3
    windows = RandomWindows(torch.arange(n), t, None, random=True)
    torch.manual_seed(0)
    starts = {int(windows[0][0][0]) for _ in range(200)}
    assert starts == {0, 1, 2, 3}


def test_random_windows_reproducible_under_manual_seed():
    windows = RandomWindows(torch.arange(1000), 16, 32, random=True)

    def draw():
        return torch.stack([windows[i][0] for i in range(len(windows))])

    torch.manual_seed(1234)
    first = draw()
    torch.manual_seed(1234)
    second = draw()
    torch.manual_seed(4321)
    other = draw()
    assert torch.equal(first, second)
    assert not torch.equal(first, other)


def test_random_windows_default_length():
    for n, t in [(101, 10), (100, 10), (11, 10), (1000, 7)]:
        assert len(RandomWindows(torch.arange(n), t, None, random=True)) == (n - 1) // t
        assert len(RandomWindows(torch.arange(n), t, None, random=False)) == (n - 1) // t
    assert len(RandomWindows(torch.arange(100), 10, 3, random=True)) == 3


def test_random_windows_too_short_raise():
    with pytest.raises(ValueError, match="seq_len"):
        RandomWindows(torch.arange(10), 10, None, random=True)
