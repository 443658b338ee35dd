"""Torture suite, bad inputs: every kind of broken, odd or hostile image file a user meets.

Each kind is generated here. Decodable ones must be featurized (with the right pixels:
EXIF orientation applied, 16-bit rescaled, transparency composited...); broken ones must
be recorded as failures with a clear reason while the rest of the run completes; the CLI
exits 1 under ``--strict`` when anything failed and 0 when nothing did.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import TEST_RESNET, cli_options
from PIL import Image, features

from deepfeat.cli.main import main
from deepfeat.featurize import Featurizer
from deepfeat.featurize.decode import decode_image

RANDOM = {**TEST_RESNET, "backbone": "torchvision:resnet18", "batch_size": 8}
CLI_RANDOM = [*cli_options({k: v for k, v in RANDOM.items() if k != "batch_size"}), "-q"]

# kind -> None (must succeed) or the substring its failure reason must contain
EXPECTED: dict[str, str | None] = {
    "truncated_jpeg_20_bytes": "corrupt JPEG file",
    "truncated_jpeg_25pct": "Truncated File Read",
    "truncated_jpeg_50pct": "truncated image data",
    "truncated_jpeg_90pct": "truncated image data",
    "truncated_jpeg_no_eoi": "truncated image data",
    "truncated_png": "truncated image data",
    "zero_byte": "empty file (0 bytes)",
    "random_bytes_as_jpg": "not a recognized image format",
    "text_as_png": "not a recognized image format",
    "png_bad_ihdr_crc": "corrupt PNG file",
    "bomb_png_100k_x_100k": "decompression bomb refused",
    "bomb_gif_65535_x_65535": "decompression bomb refused",
    "directory_named_jpg": "is a directory",
    "dangling_symlink": "dangling symbolic link",
    "missing_file": "file not found",
    # decodable
    "png_bad_idat_crc": None,  # Pillow does not check IDAT CRCs; the pixels are intact
    "one_pixel": None,
    "gray16_png": None,
    "float32_tiff": None,
    "one_bit_png": None,
    "gray_alpha_png": None,
    "cmyk_jpeg": None,
    "palette_transparent_png": None,
    "rgba_png": None,
    "exif_rotated_jpeg": None,
    "exif_garbage_jpeg": None,
    "animated_gif": None,
    "webp": None,
    "tiff": None,
    "path_with_spaces": None,
    "non_ascii_name": None,
    "non_utf8_name": None,
}


def photo(seed: int, w: int = 96, h: int = 64) -> np.ndarray:
    """A smooth, distinct colour image (no two seeds alike)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(4, 6, 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(base).resize((w, h), Image.BILINEAR))


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def bomb_png(w: int, h: int) -> bytes:
    """A 100-byte PNG whose header claims ``w`` x ``h`` RGB pixels."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + _png_chunk(b"IEND", b"")
    )


def bomb_gif(w: int, h: int) -> bytes:
    screen = struct.pack("<HHBBB", w, h, 0, 0, 0)
    image = b"\x2c" + struct.pack("<HHHHB", 0, 0, w, h, 0)
    return b"GIF89a" + screen + image + b"\x02\x02\x44\x01\x00\x3b"


def make_bad_inputs(d: Path) -> dict[str, str]:
    """One file (or non-file) per kind in :data:`EXPECTED`; returns kind -> path."""
    d.mkdir(parents=True, exist_ok=True)
    out: dict[str, str] = {}

    def put(kind: str, data: bytes, fname: str) -> None:
        (d / fname).write_bytes(data)
        out[kind] = str(d / fname)

    jpg = encode(Image.fromarray(photo(1)), "JPEG", quality=90)
    put("truncated_jpeg_20_bytes", jpg[:20], "trunc_20.jpg")
    put("truncated_jpeg_25pct", jpg[: len(jpg) // 4], "trunc_25.jpg")
    put("truncated_jpeg_50pct", jpg[: len(jpg) // 2], "trunc_50.jpg")
    put("truncated_jpeg_90pct", jpg[: len(jpg) * 9 // 10], "trunc_90.jpg")
    put("truncated_jpeg_no_eoi", jpg[:-2], "trunc_no_eoi.jpg")
    png = encode(Image.fromarray(photo(2)), "PNG")
    put("truncated_png", png[: len(png) // 2], "trunc.png")
    put("zero_byte", b"", "zero.jpg")
    put("random_bytes_as_jpg", np.random.default_rng(0).bytes(5000), "random.jpg")
    put("text_as_png", b"just some notes, not an image\n" * 20, "notes.png")
    bad = bytearray(png)
    bad[29] ^= 0xFF  # the IHDR chunk's CRC (bytes 29-32)
    put("png_bad_ihdr_crc", bytes(bad), "bad_crc_ihdr.png")
    i = png.index(b"IDAT")
    n = struct.unpack(">I", png[i - 4 : i])[0]
    bad = bytearray(png)
    bad[i + 4 + n] ^= 0xFF  # the IDAT chunk's CRC
    put("png_bad_idat_crc", bytes(bad), "bad_crc_idat.png")
    put("bomb_png_100k_x_100k", bomb_png(100_000, 100_000), "bomb.png")
    put("bomb_gif_65535_x_65535", bomb_gif(65535, 65535), "bomb.gif")
    (d / "folder.jpg").mkdir()
    out["directory_named_jpg"] = str(d / "folder.jpg")
    os.symlink(d / "was_deleted.jpg", d / "dangling.jpg")
    out["dangling_symlink"] = str(d / "dangling.jpg")
    out["missing_file"] = str(d / "never_existed.jpg")

    put("one_pixel", encode(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG"), "one_pixel.png")
    g16 = np.linspace(0, 65535, 64 * 48).reshape(48, 64).astype(np.uint16)
    put("gray16_png", encode(Image.fromarray(g16), "PNG"), "gray16.png")
    f32 = np.linspace(0.0, 1.0, 64 * 48, dtype=np.float32).reshape(48, 64)[::-1, ::-1].copy()
    put("float32_tiff", encode(Image.fromarray(f32, "F"), "TIFF"), "float32.tiff")
    put(
        "one_bit_png",
        encode(Image.fromarray(photo(12)[..., 0] > 128).convert("1"), "PNG"),
        "one_bit.png",
    )
    la = Image.fromarray(np.dstack([photo(13)[..., 1], np.full((64, 96), 200, np.uint8)]), "LA")
    put("gray_alpha_png", encode(la, "PNG"), "gray_alpha.png")
    put(
        "cmyk_jpeg",
        encode(Image.fromarray(photo(3)).convert("CMYK"), "JPEG", quality=95),
        "cmyk.jpg",
    )
    pal = Image.fromarray(photo(4)).convert("P", palette=Image.ADAPTIVE, colors=16)
    put("palette_transparent_png", encode(pal, "PNG", transparency=0), "palette.png")
    rgba = np.dstack([photo(5), np.tile(np.array([0, 255], np.uint8).repeat(48), (64, 1))])
    put("rgba_png", encode(Image.fromarray(rgba, "RGBA"), "PNG"), "rgba.png")
    exif = Image.new("RGB", (1, 1)).getexif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    put(
        "exif_rotated_jpeg",
        encode(Image.fromarray(photo(6, 96, 48)), "JPEG", quality=95, exif=exif.tobytes()),
        "rotated.jpg",
    )
    put(
        "exif_garbage_jpeg",
        encode(Image.fromarray(photo(14)), "JPEG", exif=b"Exif\x00\x00" + b"\xa5" * 64),
        "exif_garbage.jpg",
    )
    frames = [Image.new("RGB", (40, 30), c) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    put("animated_gif", buf.getvalue(), "animated.gif")
    put("webp", encode(Image.fromarray(photo(7)), "WEBP", quality=95), "image.webp")
    put("tiff", encode(Image.fromarray(photo(8)), "TIFF"), "image.tiff")
    put("path_with_spaces", encode(Image.fromarray(photo(9)), "JPEG"), "my holiday photo 1.jpg")
    put("non_ascii_name", encode(Image.fromarray(photo(10)), "JPEG"), "café_日本_straße.jpg")
    raw = os.path.join(os.fsencode(d), b"latin1_\xe9t\xe9_\xff.jpg")  # not valid UTF-8
    with open(raw, "wb") as fh:
        fh.write(encode(Image.fromarray(photo(11)), "JPEG"))
    out["non_utf8_name"] = os.fsdecode(raw)
    assert set(out) == set(EXPECTED)
    return out


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    if not features.check("webp"):
        pytest.skip("this Pillow lacks WebP support")
    return make_bad_inputs(tmp_path_factory.mktemp("torture") / "inputs")


@pytest.fixture(scope="module")
def featurized(bad_inputs, tmp_path_factory):
    kinds = list(bad_inputs)
    f = Featurizer(cache=tmp_path_factory.mktemp("tc") / "c.h5", **RANDOM)
    return kinds, f.featurize([bad_inputs[k] for k in kinds])


def test_at_least_twenty_kinds():
    assert len(EXPECTED) >= 20
    assert sum(v is not None for v in EXPECTED.values()) >= 12
    assert sum(v is None for v in EXPECTED.values()) >= 12


def test_featurize_records_every_kind_and_finishes_the_rest(bad_inputs, featurized):
    kinds, res = featurized
    reasons = {f["path"]: f["reason"] for f in res.failures}
    for i, kind in enumerate(kinds):
        path, want = bad_inputs[kind], EXPECTED[kind]
        if want is None:
            assert res.ok[i], f"{kind} should decode but failed: {reasons.get(path)}"
            assert np.isfinite(res.features[i]).all(), kind
        else:
            assert not res.ok[i], f"{kind} should fail but was featurized"
            assert want in reasons[path], f"{kind}: reason {reasons[path]!r} lacks {want!r}"
            assert np.isnan(res.features[i]).all(), kind
    n_bad = sum(v is not None for v in EXPECTED.values())
    s = res.summary
    assert (s["failed"], s["featurized"], s["cached"], s["deduplicated"]) == (
        n_bad,
        len(kinds) - n_bad,
        0,
        0,
    )
    assert {f["index"] for f in res.failures} == {i for i, k in enumerate(kinds) if EXPECTED[k]}


def test_a_second_run_takes_every_good_file_from_the_cache(bad_inputs, featurized):
    kinds, first = featurized
    f = Featurizer(cache=first.summary["cache"], **RANDOM)
    again = f.featurize([bad_inputs[k] for k in kinds])
    assert again.summary["featurized"] == 0 and f.forward_passes == 0
    assert again.summary["cached"] == int(first.ok.sum())
    assert [x["reason"] for x in again.failures] == [x["reason"] for x in first.failures]
    np.testing.assert_array_equal(again.features[first.ok], first.features[first.ok])


def test_exif_orientation_is_applied_to_pixels_and_embedding(bad_inputs):
    path = bad_inputs["exif_rotated_jpeg"]
    stored = np.asarray(Image.open(path).convert("RGB"))  # as stored, orientation ignored
    assert stored.shape[:2] == (48, 96)
    decoded = np.asarray(decode_image(path))
    assert decoded.shape[:2] == (96, 48)
    rotated = np.ascontiguousarray(np.rot90(stored, k=-1))  # orientation 6 = 90 degrees clockwise
    np.testing.assert_array_equal(decoded, rotated)
    feats = Featurizer(**RANDOM).featurize([path, rotated, stored]).features
    np.testing.assert_allclose(feats[0], feats[1], rtol=1e-5, atol=1e-6)
    assert not np.allclose(feats[0], feats[2], rtol=1e-3, atol=1e-4), (
        "negative control: unrotated differs"
    )


def test_decoded_pixels_are_right_for_odd_modes(bad_inputs):
    # 16-bit grayscale is rescaled (v / 257), not clipped to white
    g = np.asarray(decode_image(bad_inputs["gray16_png"]))[..., 0].astype(float)
    ref = np.linspace(0, 65535, 64 * 48).reshape(48, 64) / 257
    assert np.abs(g - ref).max() <= 1.0 and g.min() == 0 and g.max() == 255
    # float TIFF in [0, 1] is scaled to [0, 255]
    f = np.asarray(decode_image(bad_inputs["float32_tiff"]))[..., 0].astype(float)
    assert f[0, 0] == 255 and f[-1, -1] == 0
    # CMYK comes back as the original colours (within JPEG error)
    c = np.asarray(decode_image(bad_inputs["cmyk_jpeg"])).astype(float)
    assert np.abs(c - photo(3)).mean() < 8
    # transparency is composited over white: the transparent half of the RGBA image is white
    rgba = np.asarray(decode_image(bad_inputs["rgba_png"]))
    assert (rgba[:, :48] == 255).all()
    np.testing.assert_array_equal(rgba[:, 48:], photo(5)[:, 48:])
    pal = Image.open(bad_inputs["palette_transparent_png"])
    idx = np.asarray(pal)
    assert (idx == 0).any(), "the test image must use the transparent palette index"
    p = np.asarray(decode_image(bad_inputs["palette_transparent_png"]))
    assert (p[idx == 0] == 255).all()
    # an animated GIF gives its first frame (red), not a later one
    gif = np.asarray(decode_image(bad_inputs["animated_gif"]))
    assert gif.shape == (30, 40, 3) and (gif == [255, 0, 0]).all()
    # WebP, TIFF and a PNG with a bad IDAT checksum carry their pixels through
    assert np.abs(np.asarray(decode_image(bad_inputs["webp"])).astype(float) - photo(7)).mean() < 6
    np.testing.assert_array_equal(np.asarray(decode_image(bad_inputs["tiff"])), photo(8))
    np.testing.assert_array_equal(
        np.asarray(decode_image(bad_inputs["png_bad_idat_crc"])), photo(2)
    )
    assert decode_image(bad_inputs["one_pixel"]).getpixel((0, 0)) == (200, 10, 10)


BOMB_CHILD = textwrap.dedent(
    """
    import resource, sys, time
    from deepfeat.featurize.decode import decode_image
    from deepfeat.exceptions import ImageDecodeError
    results = []
    for path, max_pixels in zip(sys.argv[1::2], sys.argv[2::2]):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        try:
            decode_image(path, max_pixels=int(max_pixels))
            outcome = "decoded"
        except ImageDecodeError as exc:
            outcome = exc.reason
        grew_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        results.append((outcome, time.perf_counter() - t0, grew_kib))
    print(repr(results))
    """
)


def test_decompression_bomb_is_refused_without_allocating(bad_inputs, tmp_path):
    from deepfeat.featurize.decode import DEFAULT_MAX_PIXELS

    big = tmp_path / "big.png"  # a genuine 2000 x 2000 image, for the controls
    Image.fromarray(np.zeros((2000, 2000, 3), np.uint8)).save(big)
    cases = [  # peak memory only grows, so the one case that must allocate comes last
        (bad_inputs["bomb_png_100k_x_100k"], DEFAULT_MAX_PIXELS),
        (bad_inputs["bomb_gif_65535_x_65535"], DEFAULT_MAX_PIXELS),
        (str(big), 1_000_000),
        (str(big), DEFAULT_MAX_PIXELS),
    ]
    argv = [x for path, limit in cases for x in (path, str(limit))]
    out = subprocess.run(
        [sys.executable, "-c", BOMB_CHILD, *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    results = eval(out.stdout.strip().splitlines()[-1])  # noqa: S307 - our own child's repr
    for (outcome, seconds, grew_kib), (path, _) in zip(results[:2], cases):
        assert "decompression bomb refused" in outcome, (path, outcome)
        assert seconds < 2.0, f"{path}: took {seconds:.1f} s"
        assert grew_kib < 50 * 1024, f"{path}: peak memory grew by {grew_kib / 1024:.0f} MiB"
    # controls: the limit is a real check made before decoding, and a genuine image passes it
    outcome, _, grew_kib = results[2]
    assert "decompression bomb refused" in outcome and "4,000,000" in outcome
    assert grew_kib < 8 * 1024
    assert results[3][0] == "decoded"


def _folder_of(bad_inputs, kinds, dst: Path) -> Path:
    """A folder holding (symlinks to) the inputs of ``kinds``, names kept."""
    dst.mkdir()
    for k in kinds:
        src = os.fsencode(bad_inputs[k])
        if k in ("missing_file",):
            continue
        if k == "dangling_symlink":
            os.symlink(os.readlink(src), os.path.join(os.fsencode(dst), os.path.basename(src)))
        elif k == "directory_named_jpg":
            os.mkdir(os.path.join(os.fsencode(dst), os.path.basename(src)))
        else:
            with (
                open(src, "rb") as a,
                open(os.path.join(os.fsencode(dst), os.path.basename(src)), "wb") as b,
            ):
                b.write(a.read())
    return dst


def test_cli_strict_exit_code_and_failures_in_json(bad_inputs, tmp_path, capsys):
    every = _folder_of(bad_inputs, list(EXPECTED), tmp_path / "every")
    good = _folder_of(bad_inputs, [k for k, v in EXPECTED.items() if v is None], tmp_path / "good")
    cache = str(tmp_path / "c.h5")
    base = ["featurize", "--cache", cache, *CLI_RANDOM, "--json"]
    assert main([*base[:1], str(good), *base[1:], "--strict"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["failed"] == 0 and out["featurized"] == sum(v is None for v in EXPECTED.values())

    assert main([*base[:1], str(every), *base[1:]]) == 0  # failures alone do not fail the run...
    capsys.readouterr()
    assert main([*base[:1], str(every), *base[1:], "--strict"]) == 1  # ...unless --strict
    out = json.loads(capsys.readouterr().out)
    listed = {os.path.basename(f["path"]): f["reason"] for f in out["failures"]}
    # a folder walk never lists the missing file, and walks into the directory named x.jpg
    expect_fail = {
        k for k, v in EXPECTED.items() if v and k not in ("missing_file", "directory_named_jpg")
    }
    assert len(listed) == len(expect_fail) == out["failed"]
    for k in expect_fail:
        assert EXPECTED[k] in listed[os.path.basename(bad_inputs[k])], k
    assert out["featurized"] == 0 and out["cached"] == sum(v is None for v in EXPECTED.values())


def test_cli_text_output_survives_non_utf8_file_names(bad_inputs, tmp_path, capsys):
    d = tmp_path / "names"
    d.mkdir()
    with open(os.path.join(os.fsencode(d), b"broken_\xe9\xff.jpg"), "wb") as fh:
        fh.write(b"not a jpeg")
    code = main(["featurize", str(d), "--cache", str(tmp_path / "c.h5"), *CLI_RANDOM, "--strict"])
    captured = capsys.readouterr()
    assert code == 1
    assert (
        "FAILED" in captured.out
        and "broken_" in captured.out
        and "not a recognized image" in captured.out
    )


# ----------------------------------------------------------------------------- manifests
def _write_csv(path: Path, rows: dict[str, list]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_manifest_problems_are_clear_cli_errors(bad_inputs, tmp_path, capsys):
    d = tmp_path / "m"
    d.mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(photo(hash(name) % 1000)).save(d / name)
    cases = {
        "missing column": ({"file": ["a.png"], "label": ["x"]}, r"missing column(s) 'path'"),
        "NaN label": (
            {"path": ["a.png", "b.png"], "label": ["x", np.nan]},
            "empty label in line(s) [3]",
        ),
        "empty path": ({"path": ["a.png", ""], "label": ["x", "y"]}, "empty path in line(s) [3]"),
        "conflicting duplicate": (
            {"path": ["a.png", "a.png"], "label": ["x", "y"]},
            "listed twice with different labels",
        ),
    }
    for what, (rows, message) in cases.items():
        m = _write_csv(d / "labels.csv", rows)
        code = main(["featurize", str(m), "--cache", str(tmp_path / "c.h5"), *CLI_RANDOM, "--json"])
        captured = capsys.readouterr()
        assert code == 1, what
        err = json.loads(captured.out)
        assert err["error_type"] == "InputError" and message in err["error"], (what, err)
        assert str(m) in err["error"], "the error names the manifest"
        assert "Traceback" not in captured.err


def test_manifest_relative_paths_duplicates_and_bad_files(
    bad_inputs, tmp_path, capsys, monkeypatch
):
    d = tmp_path / "ds"
    (d / "imgs").mkdir(parents=True)
    Image.fromarray(photo(21)).save(d / "imgs" / "a.png")
    Image.fromarray(photo(22)).save(d / "imgs" / "b b.png")
    m = _write_csv(
        d / "labels.csv",
        {
            "path": [
                "imgs/a.png",
                "imgs/b b.png",
                "imgs/a.png",
                bad_inputs["zero_byte"],
                "imgs/missing.png",
            ],
            "label": ["cat", "dog", "cat", "cat", "dog"],
        },
    )
    monkeypatch.chdir(tmp_path)  # relative paths resolve against the manifest, not the cwd
    code = main(
        ["featurize", str(m), "--cache", str(tmp_path / "c.h5"), *CLI_RANDOM, "--json", "--strict"]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 1
    assert out["featurized"] == 2 and out["failed"] == 2 and out["total"] == 4
    reasons = {os.path.basename(f["path"]): f["reason"] for f in out["failures"]}
    assert reasons == {"zero.jpg": "empty file (0 bytes)", "missing.png": "file not found"}
    assert [s["reason"] for s in out["skipped_files"]] == ["duplicate row in manifest"]


# ----------------------------------------------------------------------------- predict
@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A tiny red-vs-blue classifier on random test_resnet features, saved by `deepfeat fit`."""
    root = tmp_path_factory.mktemp("fit")
    for cls, base, channel in (("red", 0, 0), ("blue", 50, 2)):
        (root / "train" / cls).mkdir(parents=True)
        for i in range(6):
            a = photo(base + i).copy()
            a[..., channel] = 255
            Image.fromarray(a).save(root / "train" / cls / f"{i}.png")
    out = root / "m.joblib"
    with pytest.MonkeyPatch.context() as mp:  # the trust list conftest gives every test
        mp.setenv(
            "DEEPFEAT_TRUST_STORE", str(tmp_path_factory.getbasetemp() / "trusted-models.txt")
        )
        code = main(
            [
                "fit",
                str(root / "train"),
                "--out",
                str(out),
                "--backbone",
                "timm:test_resnet",
                "--weights",
                "none",
                "--device",
                "cpu",
                "--workers",
                "0",
                "--heads",
                "logreg",
                "--cv",
                "2",
                "-q",
            ]
        )
    assert code == 0
    return out


def _escaped(path: str) -> str:
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def test_predict_status_column_for_every_kind(bad_inputs, model_file, tmp_path, capsys):
    kinds = list(EXPECTED)
    listing = tmp_path / "all.txt"  # a listing keeps the missing file and the directory as inputs
    listing.write_bytes(b"\n".join(os.fsencode(bad_inputs[k]) for k in kinds))
    out = tmp_path / "pred.csv"
    argv = [
        "predict",
        str(model_file),
        str(listing),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--workers",
        "0",
        "-q",
        "--json",
    ]
    assert main(argv) == 0  # failures are reported, not fatal...
    summary = json.loads(capsys.readouterr().out)
    table = pd.read_csv(out, keep_default_na=False)
    assert list(table.columns) == ["path", "label", "proba_blue", "proba_red", "status"]
    assert len(table) == len(kinds) == summary["n_inputs"]
    rows = {r["path"]: r for r in table.to_dict("records")}
    for k in kinds:
        r = rows[_escaped(bad_inputs[k])]
        if EXPECTED[k] is None:
            assert r["status"] == "ok" and r["label"] in ("red", "blue"), (k, r)
            assert abs(float(r["proba_red"]) + float(r["proba_blue"]) - 1) < 1e-6
        else:
            assert EXPECTED[k] in r["status"] and r["label"] == "" and r["proba_red"] == "", (k, r)
    n_bad = sum(v is not None for v in EXPECTED.values())
    assert (summary["n_ok"], summary["n_failed"]) == (len(kinds) - n_bad, n_bad)
    assert main([*argv, "--strict"]) == 1  # ...unless --strict
    capsys.readouterr()
    good = tmp_path / "good.txt"
    good.write_bytes(b"\n".join(os.fsencode(bad_inputs[k]) for k in kinds if EXPECTED[k] is None))
    assert (
        main(
            [
                "predict",
                str(model_file),
                str(good),
                "--out",
                str(tmp_path / "g.csv"),
                "--device",
                "cpu",
                "--workers",
                "0",
                "-q",
                "--json",
                "--strict",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["n_failed"] == 0
