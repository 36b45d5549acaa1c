"""The DataSpec's round trip through plain Python values, old checkpoints included."""

from __future__ import annotations

from glimpse.batches import LABELLED_IMAGES, TEXT
from glimpse.data.spec import DataSpec


def test_image_spec_round_trips_through_plain_lists():
    spec = DataSpec(
        kind=LABELLED_IMAGES,
        class_names=("tench", "church"),
        image_size=32,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        metadata={"root": "/data"},
    )
    data = spec.to_dict()
    assert data["class_names"] == ["tench", "church"]
    assert data["mean"] == [0.5, 0.5, 0.5] and data["std"] == [0.25, 0.25, 0.25]
    assert data["image_size"] == 32 and data["vocab"] is None
    assert DataSpec.from_dict(data) == spec


def test_a_spec_saved_before_the_image_fields_existed_loads_with_them_none():
    old = {"kind": TEXT, "vocab": ["\ufffd", "a", "b"], "metadata": {"corpus": "text"}}
    spec = DataSpec.from_dict(old)
    assert spec.vocab == ("\ufffd", "a", "b")
    assert spec.class_names is None and spec.image_size is None
    assert spec.mean is None and spec.std is None


def test_a_text_spec_dict_holds_no_image_fields():
    assert DataSpec(kind=TEXT, vocab=("\ufffd", "a")).to_dict() == {
        "kind": TEXT,
        "vocab": ["\ufffd", "a"],
        "metadata": {},
    }
