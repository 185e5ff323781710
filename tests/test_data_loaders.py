"""Loaders on tiny fixtures written in each real dataset's file format (tests/fixtures/accuracy/)."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from bench.accuracy import data, fetch
from bench.accuracy.tasks import tasks_of
from bench.core.errors import UsageError

FIXTURES = Path(__file__).parent / "fixtures" / "accuracy"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A dataset cache holding the fixtures as ready datasets."""
    monkeypatch.setenv(fetch.DATA_ENV, str(tmp_path))
    for name in ("coco-val2017", "coco-karpathy-test", "coco-val2014", "refcoco", "textcaps-val"):
        shutil.copytree(FIXTURES / name, tmp_path / name)
    (tmp_path / "coco-train2014" / "train2014").mkdir(parents=True)
    (tmp_path / "textcaps-val" / "train_images").mkdir()
    for folder in tmp_path.iterdir():
        (folder / fetch.READY).write_text("{}")
    return tmp_path


def test_synthetic_smoke_fingerprint_is_pinned():
    assert (
        data.fingerprint(data.synthetic_smoke())
        == "cb5c60e5e1318622c7d36c9d62ceea6cdc80321d352244c9c8adfa91d13e90bd"
    )
    assert data.load_samples("synthetic-smoke:3") == data.synthetic_smoke(3)


def test_coco_val2017_loader(cache):
    samples = data.load_samples("coco-val2017")
    by_id = {s.image_id: s for s in samples}
    assert sorted(by_id) == [139, 285, 632]
    s139 = by_id[139]
    assert (s139.width, s139.height) == (64, 48)
    assert s139.image_path == str(cache / "coco-val2017" / "val2017" / "000000000139.jpg")
    assert s139.captions[0] == "A woman stands in the dining area at the table."
    # xywh -> xyxy; the crowd region is kept last and marked
    assert s139.objects[0].bbox == (10.0, 10.0, 30.0, 40.0) and s139.objects[0].category == "person"
    assert s139.objects[-1].description == data.CROWD
    assert s139.regions == [s139.objects[0]]
    # the larger of two polygon parts
    assert by_id[285].objects[0].polygon == (5.0, 10.0, 50.0, 10.0, 50.0, 60.0, 5.0, 60.0)
    # objects[0] is the largest non-crowd object
    assert by_id[632].objects[0].category == "bed"
    assert by_id[632].load_image().size == (60, 40)


def test_subset_rule_is_sha256_order_and_nested(cache):
    full = data.load_samples("coco-val2017")
    expected = sorted([139, 285, 632], key=lambda i: hashlib.sha256(str(i).encode()).hexdigest())
    assert [s.image_id for s in full] == expected
    assert [s.image_id for s in data.load_samples("coco-val2017:2")] == expected[:2]
    assert [s.image_id for s in data.load_samples("coco-val2017:2", limit=1)] == expected[:1]
    with pytest.raises(UsageError, match="NAME:N"):
        data.load_samples("coco-val2017:x")


def test_karpathy_test_split(cache):
    samples = data.load_samples("coco-karpathy-test")
    assert sorted(s.image_id for s in samples) == [391895, 522418]
    s = next(s for s in samples if s.image_id == 522418)
    assert (s.width, s.height) == (30, 50)  # read from the JPEG header
    assert s.captions == [
        "A woman wearing a net on her head cutting a cake.",
        "A woman cutting a large white sheet cake.",
    ]
    assert s.image_path.endswith("coco-val2014/val2014/COCO_val2014_000000522418.jpg")


def test_refcoco_splits(cache):
    val = data.load_samples("refcoco-val")
    assert [s.image_id for s in sorted(val, key=lambda s: s.image_id)] == [2, 3]
    s = next(s for s in val if s.image_id == 2)
    assert s.expressions[0].text == "woman on right" and s.expressions[0].category == "person"
    assert s.expressions[0].bbox == (50.0, 5.0, 75.0, 30.0)
    assert s.grounding_caption == "woman on right" and s.phrases[0].bbox == s.expressions[0].bbox
    assert s.objects[0].category == "woman on right"  # the open-vocabulary query
    assert s.image_path.endswith("coco-train2014/train2014/COCO_train2014_000000581857.jpg")
    assert {x.image_id for x in data.load_samples("refcoco-testA")} == {0, 1}
    assert [x.image_id for x in data.load_samples("refcoco-testB")] == [4]


def test_refs_pickle_that_runs_code_is_refused(cache):
    import pickle

    (cache / "refcoco" / "refcoco" / "refs(unc).p").write_bytes(pickle.dumps(Path("x")))
    with pytest.raises(UsageError, match="refusing to unpickle"):
        data.load_samples("refcoco-val")


def test_textcaps_groups_captions_by_image(cache):
    samples = data.load_samples("textcaps-val")
    by_id = {s.image_id: s for s in samples}
    s = by_id[int("0054d1b4f5dc2d6a", 16)]
    assert s.captions == ["A sign that says STOP on a red background.", "The stop sign is red and white."]
    assert (s.width, s.height) == (64, 48) and s.image_path.endswith("train_images/0054d1b4f5dc2d6a.jpg")
    assert len(by_id) == 2


def test_coco_json_with_image_dir_and_subset(cache):
    ann = cache / "coco-val2017" / "annotations" / "instances_val2017.json"
    img = cache / "coco-val2017" / "val2017"
    spec = data.get_dataset(f"coco-json:{ann}@{img}")
    assert "<OD>" in tasks_of(spec) and "<CAPTION>" not in tasks_of(spec)
    samples = data.load_samples(f"coco-json:{ann}@{img}:2")
    assert len(samples) == 2 and samples[0].image_path.startswith(str(img))
    assert data.load_samples(f"coco-json:{ann}")[0].image_path.startswith(str(ann.parent))
    with pytest.raises(UsageError, match="not found"):
        data.get_dataset("coco-json:/nonexistent.json")
    bad = cache / "bad.json"
    bad.write_text(json.dumps({"annotations": []}))
    with pytest.raises(UsageError, match="not a COCO annotation file"):
        data.load_samples(f"coco-json:{bad}")


def test_missing_dataset_names_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv(fetch.DATA_ENV, str(tmp_path))
    with pytest.raises(UsageError, match="florence2-bench datasets fetch coco-val2017"):
        data.load_samples("coco-val2017:5")
    with pytest.raises(UsageError, match="accepted"):
        data.get_dataset("nope")


def test_registry_tasks_agree_with_manifests():
    manifests = fetch.manifests()
    for name, spec in data.DATASETS.items():
        manifest = manifests[data.MANIFEST_OF[name]]
        assert set(tasks_of(spec)) == set(manifest.tasks), name
    for m in manifests.values():
        assert m.subset and m.license and m.format, m.name
        for f in m.files:
            assert f.url.startswith(("http://", "https://")) and len(f.sha256) in (0, 64)
