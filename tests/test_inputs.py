"""Input sources: class folders with stray files, manifests, listings."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
from conftest import SHARED_DATASETS

from deepfeat.exceptions import InputError
from deepfeat.featurize.inputs import collect_images, load_labeled, scan_images


@pytest.fixture
def class_tree(photo_dir, tmp_path):
    root = tmp_path / "ds"
    (root / "cat").mkdir(parents=True)
    (root / "drink").mkdir()
    shutil.copy(photo_dir / "chelsea.jpg", root / "cat" / "a.jpg")
    shutil.copy(photo_dir / "chelsea.jpg", root / "cat" / "jpeg_without_extension")
    shutil.copy(photo_dir / "coffee.png", root / "drink" / "b.png")
    (root / "drink" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0" + b"\0" * 100)
    (root / "drink" / ".DS_Store").write_bytes(b"junk")
    (root / "listing.txt").write_text("a list that sat beside the class folders\n")
    return root


def test_folder_keeps_real_images_and_records_stray_files(class_tree):
    ds = load_labeled(class_tree)
    assert ds.classes == ["cat", "drink"]
    names = sorted(p.rsplit("/", 1)[1] for p in ds.paths)
    assert names == ["a.jpg", "b.png", "jpeg_without_extension"]
    skipped = {s["path"].rsplit("/", 1)[1]: s["reason"] for s in ds.skipped}
    assert set(skipped) == {"Thumbs.db", "listing.txt"}
    assert "not an image" in skipped["Thumbs.db"]
    assert "outside the class folders" in skipped["listing.txt"]


def test_manifest_paths_are_relative_to_it_and_errors_are_clear(class_tree, tmp_path):
    m = class_tree / "labels.csv"
    pd.DataFrame({"path": ["cat/a.jpg", "drink/b.png", "cat/a.jpg"], "label": ["cat", "drink", "cat"]}).to_csv(m, index=False)
    ds = load_labeled(m)
    assert ds.paths[0] == str(class_tree / "cat" / "a.jpg") and ds.labels == ["cat", "drink"]
    assert ds.skipped[0]["reason"] == "duplicate row in manifest"

    pd.DataFrame({"file": ["a.jpg"], "label": ["x"]}).to_csv(m, index=False)
    with pytest.raises(InputError, match=r"missing column\(s\) 'path'.*columns present: file, label"):
        load_labeled(m)
    pd.DataFrame({"path": ["a.jpg", "b.jpg"], "label": ["x", None]}).to_csv(m, index=False)
    with pytest.raises(InputError, match=r"empty label in line\(s\) \[3\]"):
        load_labeled(m)
    pd.DataFrame({"path": ["a.jpg", "a.jpg"], "label": ["x", "y"]}).to_csv(m, index=False)
    with pytest.raises(InputError, match="twice with different labels"):
        load_labeled(m)


def test_parquet_manifest(class_tree):
    m = class_tree / "labels.parquet"
    pd.DataFrame({"path": ["cat/a.jpg"], "label": ["cat"]}).to_parquet(m)
    assert load_labeled(m).labels == ["cat"]


def test_listing_and_missing_sources(class_tree, tmp_path):
    lst = tmp_path / "files.txt"
    lst.write_text(f"{class_tree}/cat/a.jpg\n# comment\n\nrelative.jpg\n")
    assert collect_images(lst) == [f"{class_tree}/cat/a.jpg", str(tmp_path / "relative.jpg")]
    with pytest.raises(InputError, match="no such file or folder"):
        scan_images(tmp_path / "nope")
    with pytest.raises(InputError, match="no class subfolders"):
        load_labeled(class_tree / "cat")


def test_shared_bad_inputs_folder():
    d = SHARED_DATASETS / "bad_inputs"
    if not d.is_dir():
        pytest.skip("needs ../shared/datasets/bad_inputs (not present on this machine)")
    paths, skipped = scan_images(d)
    kept = {p.rsplit("/", 1)[1] for p in paths}
    dropped = {s["path"].rsplit("/", 1)[1] for s in skipped}
    assert "Thumbs.db" in dropped and any("zero" in k for k in kept)
    assert any("." not in k for k in kept), "the extensionless JPEG must be kept"


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear", "lanczos"])
@pytest.mark.parametrize("name,size", [("chelsea", None), ("astronaut", (160, 300)), ("coffee", (90, 60))])
def test_geometry_matches_pillow_resize_then_crop(interpolation, name, size):
    """Downscaling, a portrait image and an upscaled small one: within a few grey levels of
    resizing the whole image with Pillow and cropping the centre (mostly equal)."""
    import numpy as np
    from conftest import sample_photo
    from PIL import Image

    from deepfeat.featurize.preprocess import _PIL_INTERPOLATION, Preprocess

    img = Image.fromarray(sample_photo(name)).convert("RGB")
    if size is not None:
        img = img.resize(size)
    p = Preprocess(resize=256, crop=(224, 224), interpolation=interpolation,
                   mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    w, h = img.size
    scale = 256 / min(w, h)
    nw, nh = round(w * scale), round(h * scale)
    ref = img.resize((nw, nh), _PIL_INTERPOLATION[interpolation])
    left, top = (nw - 224) // 2, (nh - 224) // 2
    ref = np.asarray(ref.crop((left, top, left + 224, top + 224))).astype(int)
    got = p.geometry(img).permute(1, 2, 0).numpy().astype(int)
    diff = np.abs(got - ref)
    assert got.shape == ref.shape == (224, 224, 3)
    # rounding differs between the kernels; Pillow's crop-window lanczos (upscaling) was
    # seen up to 9 levels off on a few pixels of sharp edges
    assert diff.max() <= 10 and diff.mean() < 0.5, (diff.max(), diff.mean())
    # negative control: the crop one pixel off is far from the reference
    assert np.abs(np.roll(got, 1, axis=1) - ref).mean() > 2 * diff.mean() + 0.5
