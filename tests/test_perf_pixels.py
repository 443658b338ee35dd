"""The fast preprocessing keeps what the network sees: decode, window resize, folded normalisation.

Each shortcut is compared with the plain way of doing the same step (Pillow decode, a resize
of the whole image, a separate normalise before the unfolded network), with a negative
control showing the comparison catches a real change.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from conftest import PHOTOS, sample_photo
from PIL import Image

from deepfeat.benchmarking.fidelity import reference_embeddings, row_cosines
from deepfeat.exceptions import ImageDecodeError, UnsupportedPreprocessingError
from deepfeat.featurize.decode import decode_image, decode_pixels
from deepfeat.featurize.preprocess import Preprocess, _resize_crop
from deepfeat.featurize.surgery import RawPixelInput, _BorderBias, fold_input_normalization

IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def _rgb(name: str) -> Image.Image:
    return Image.fromarray(sample_photo(name)).convert("RGB")


def _jpeg(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90, **kw)
    return buf.getvalue()


# ---------------------------------------------------------------------------- decode
@pytest.mark.parametrize("orientation", range(1, 9))
def test_fast_jpeg_decode_gives_pillows_pixels_for_every_exif_orientation(orientation):
    img = _rgb("chelsea")
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _jpeg(img, exif=exif.tobytes())
    ref = np.asarray(decode_image(data))
    got = decode_pixels(data).numpy()
    assert got.shape == ref.shape
    assert np.array_equal(got, ref)
    if orientation in (5, 6, 7, 8):  # the rotation really happened
        assert got.shape[:2] == img.size


@pytest.mark.parametrize("kind", ["progressive", "grayscale", "trailing_bytes", "png", "cmyk", "large"])
def test_fast_and_pillow_decode_agree_on_other_files(kind):
    img = _rgb("coffee")
    if kind == "progressive":
        data = _jpeg(img, progressive=True)
    elif kind == "grayscale":
        data = _jpeg(img.convert("L"))
    elif kind == "trailing_bytes":
        data = _jpeg(img) + b"\x00garbage"
    elif kind == "png":
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        data = buf.getvalue()
    elif kind == "cmyk":
        data = _jpeg(img.convert("CMYK"))
    else:  # decoded at a reduced DCT scale by Pillow's draft mode: the Pillow path
        data = _jpeg(img.resize((1800, 1200)))
    ref = np.asarray(decode_image(data, draft_size=256))
    got = decode_pixels(data, draft_size=256).numpy()
    assert got.dtype == np.uint8 and got.shape == ref.shape and got.shape[2] == 3
    assert np.array_equal(got, ref)


def test_truncated_jpeg_gets_pillows_verdict():
    data = _jpeg(_rgb("astronaut"))
    with pytest.raises(ImageDecodeError) as ref:
        decode_image(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError) as got:
        decode_pixels(data[: len(data) // 2])
    assert got.value.reason == ref.value.reason and "truncated" in got.value.reason
    # data cut short but closed by an end-of-image marker: both decoders pad it alike
    # (Pillow silently, libjpeg with a line on stderr)
    cut = data[: len(data) // 2] + b"\xff\xd9"
    assert np.array_equal(decode_pixels(cut).numpy(), np.asarray(decode_image(cut)))


# ---------------------------------------------------------------------------- resize
def _full(x, size, corner, crop, mode, antialias=True):
    y = torch.nn.functional.interpolate(x, size=size, mode=mode, antialias=antialias, align_corners=False)
    return y[:, :, corner[0] : corner[0] + crop[0], corner[1] : corner[1] + crop[1]]


def test_window_resize_matches_resizing_the_whole_image():
    rng = np.random.default_rng(0)
    worst, means, windowed = 0, [], 0
    for name in PHOTOS:
        base = torch.from_numpy(np.array(_rgb(name))).permute(2, 0, 1)[None]
        for _ in range(2):
            h, w = (int(v) for v in rng.integers(230, 800, 2))
            x = torch.nn.functional.interpolate(base, size=(h, w), mode="bilinear", antialias=True)
            s = 256 / min(h, w)
            nh, nw = round(h * s), round(w * s)
            corner = ((nh - 224) // 2, (nw - 224) // 2)
            for mode in ("bicubic", "bilinear"):
                ref = _full(x, (nh, nw), corner, (224, 224), mode)
                got = _resize_crop(x, (nh, nw), corner, (224, 224), mode)
                d = (ref.int() - got.int()).abs()
                worst, means = max(worst, int(d.max())), [*means, float(d.float().mean())]
                windowed += abs(h - w) > 100
                # negative control: the crop one output pixel off
                off = _full(x, (nh, nw), (corner[0], corner[1] + 1), (224, 224), mode)
                assert (off.int() - ref.int()).abs().float().mean() > 10 * float(d.float().mean()) + 0.3
    assert windowed > 5
    assert worst <= 4 and np.mean(means) < 0.1, (worst, np.mean(means))


def test_geometry_of_a_tensor_equals_geometry_of_the_pil_image():
    p = Preprocess(resize=256, crop=(224, 224), interpolation="bicubic", **IMAGENET)
    for name in ("chelsea", "rocket", "astronaut"):
        img = _rgb(name)
        a = p.geometry(img)
        b = p.geometry(torch.from_numpy(np.asarray(img).copy()))
        assert torch.equal(a, b)
    # the Pillow-only interpolations take the tensor too
    q = Preprocess(resize=256, crop=(224, 224), interpolation="lanczos", **IMAGENET)
    img = _rgb("coffee")
    assert torch.equal(q.geometry(img), q.geometry(torch.from_numpy(np.asarray(img).copy())))


# ---------------------------------------------------------------------------- crop modes
def test_squash_resizes_both_sides_and_differs_from_a_centre_crop():
    kw = dict(resize=256, crop=(224, 224), interpolation="bicubic", **IMAGENET)
    img = _rgb("rocket")  # 640 x 427
    squash = Preprocess(**kw, crop_mode="squash").geometry(img).permute(1, 2, 0).numpy().astype(int)
    ref = np.asarray(img.resize((256, 256), Image.Resampling.BICUBIC).crop((16, 16, 240, 240))).astype(int)
    assert np.abs(squash - ref).mean() < 0.5
    centre = Preprocess(**kw).geometry(img).permute(1, 2, 0).numpy().astype(int)
    assert np.abs(centre - ref).mean() > 10 * np.abs(squash - ref).mean() + 2


def test_timm_crop_modes_squash_kept_border_refused_by_name():
    cfg = {"input_size": (3, 384, 384), "crop_pct": 1.0, "interpolation": "bicubic", **IMAGENET}
    p = Preprocess.from_timm_config({**cfg, "crop_mode": "squash"})
    assert p.crop_mode == "squash" and p.to_dict()["crop_mode"] == "squash"
    assert Preprocess.from_dict(p.to_dict()) == p
    with pytest.raises(UnsupportedPreprocessingError, match="'border'"):
        Preprocess.from_timm_config({**cfg, "crop_mode": "border"})
    # a centre crop's dictionary (and so every existing fingerprint) is what it was
    centre = Preprocess.from_timm_config(cfg)
    assert "crop_mode" not in centre.to_dict() and Preprocess.from_dict(centre.to_dict()) == centre


def test_a_real_timm_config_with_squash_resolves_to_squash():
    pytest.importorskip("timm")
    from deepfeat.featurize.backbones import resolve_backbone

    rb = resolve_backbone("timm:convnext_base.fb_in22k_ft_in1k_384", weights=None)
    assert rb.preprocess.crop_mode == "squash"


# ---------------------------------------------------------------------------- folding
def _normalise(x, mean, std):
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    return (x.float() / 255 - m) / s


def _photo_batch(size=64):
    imgs = [_rgb(n).resize((size, size)) for n in ("chelsea", "coffee", "astronaut")]
    return torch.from_numpy(np.stack([np.asarray(i) for i in imgs])).permute(0, 3, 1, 2).contiguous()


@pytest.mark.usefixtures("own_global_rng")  # the test's own code draws from them
@pytest.mark.parametrize("layer", ["pad1", "pad0", "pad3_stride2_nobias", "tf_same"])
def test_folded_normalisation_is_exact_for_any_padding(layer):
    torch.manual_seed(0)
    if layer == "pad1":
        conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    elif layer == "pad0":
        conv = torch.nn.Conv2d(3, 8, 3)
    elif layer == "pad3_stride2_nobias":
        conv = torch.nn.Conv2d(3, 8, 7, stride=2, padding=3, bias=False)
    else:
        from timm.layers import create_conv2d

        conv = create_conv2d(3, 8, 3, stride=2, padding="same")  # Conv2dSame: pads right/bottom
    net = torch.nn.Sequential(conv, torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3, padding=1)).eval()
    x = _photo_batch()
    raw = fold_input_normalization(net, IMAGENET["mean"], IMAGENET["std"], x)
    assert isinstance(raw, RawPixelInput)
    with torch.no_grad():
        ref, got = net(_normalise(x, **IMAGENET)), raw(x)
        assert torch.allclose(got, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))
    borders = [m for m in raw.modules() if isinstance(m, _BorderBias)]
    assert len(borders) == (0 if layer == "pad0" else 1)
    if borders:  # negative control: fold into weights and bias alone, no border correction
        borders[0].delta.zero_()
        with torch.no_grad():
            naive = raw(x)
        assert (naive - ref).abs().max() > 100 * (got - ref).abs().max()


@pytest.mark.usefixtures("own_global_rng")  # the test's own code draws from them
def test_folding_is_refused_where_the_input_feeds_more_than_the_first_convolution():
    class TwoUses(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, x):
            return self.conv(x) + x  # a skip from the normalised input

    net = TwoUses().eval()
    x = _photo_batch(32)
    raw = fold_input_normalization(net, IMAGENET["mean"], IMAGENET["std"], x)
    assert raw is None


@pytest.mark.parametrize("backbone,weights", [("efficientnet_lite0", "DEFAULT"), ("torchvision:resnet18", None),
                                               ("timm:mobilenetv3_small_100", None)])
def test_featurizer_folds_real_backbones_and_keeps_their_output(backbone, weights):
    from deepfeat.benchmarking.contenders import plain_network
    from deepfeat.featurize import Featurizer

    f = Featurizer(backbone, weights=weights, device="cpu", precision="fp32")
    assert getattr(f.model, "takes_raw_pixels", False), type(f.model)
    p = f.preprocess
    u8 = torch.stack([p.geometry(_rgb(n)) for n in ("chelsea", "coffee", "astronaut", "rocket")])
    plain = plain_network(f)
    with torch.no_grad():
        ref = plain(p.normalize(u8))
        got = f.encoder.encode(u8)
    cos = torch.nn.functional.cosine_similarity(got, ref, dim=1)
    assert float(cos.min()) > 0.99999
    # negative control: the folded network fed normalised input (a double normalisation)
    with torch.no_grad():
        wrong = f.model(p.normalize(u8)).float()
    assert float(torch.nn.functional.cosine_similarity(wrong, ref, dim=1).mean()) < 0.999


def test_bf16_folded_network_stays_within_bf16_noise():
    from deepfeat.benchmarking.contenders import plain_network
    from deepfeat.featurize import Featurizer

    f = Featurizer("efficientnet_lite0", device="cpu", precision="bf16")
    p = f.preprocess
    # four photos: bf16 is emulated on CPUs without AVX-512 BF16, ~10 s per photo on 2 cores
    u8 = torch.stack([p.geometry(_rgb(n)) for n in PHOTOS[:4]])
    with torch.no_grad():
        ref32 = plain_network(f)(p.normalize(u8))
        with f.runtime.autocast():
            ref16 = plain_network(f)(p.normalize(u8)).float()
        got = f.encoder.encode(u8)
    cos = torch.nn.functional.cosine_similarity
    noise = float(cos(ref16, ref32, dim=1).mean())  # what bf16 costs without folding
    assert float(cos(got, ref32, dim=1).mean()) >= 1 - 2 * (1 - noise)


# ---------------------------------------------------------------------------- end to end
def _embeddings_match_todays(paths):
    from deepfeat.featurize import Featurizer

    f = Featurizer("efficientnet_lite0", device="cpu", precision="fp32", num_workers=0)
    paths = [str(p) for p in paths]
    got = f.featurize(paths).features
    today = reference_embeddings(f, paths)  # the pipeline before the shortcuts
    cos = row_cosines(got, today)
    # negative control: a real preprocessing change (bilinear, no antialiasing) is caught
    changed = row_cosines(reference_embeddings(f, paths, mode="bilinear", antialias=False), today)
    return float(cos.mean()), float(changed.mean())


def test_embeddings_of_real_photos_match_todays_pipeline(tmp_path):
    paths = []
    for name in PHOTOS:
        img = _rgb(name)
        for k, scale in enumerate((1.45, 0.8)):
            size = (max(230, math.floor(img.width * scale)), max(230, math.floor(img.height * scale)))
            path = tmp_path / f"{name}-{k}.jpg"
            path.write_bytes(_jpeg(img.resize(size, Image.Resampling.LANCZOS)))
            paths.append(path)
    ok, changed = _embeddings_match_todays(paths)
    assert ok >= 0.999
    assert changed < 0.999 and 1 - changed > 10 * (1 - ok)


@pytest.mark.datasets
def test_embeddings_of_oxford17_match_todays_pipeline():
    from conftest import shared_dataset

    root = shared_dataset("oxford17")
    paths = sorted(root.glob("*/*.jpg"))[::20]
    ok, changed = _embeddings_match_todays(paths)
    assert ok >= 0.999
    assert changed < 0.999 and 1 - changed > 10 * (1 - ok)
