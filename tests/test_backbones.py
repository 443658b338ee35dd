"""Backbone registry, weights, truncation and the offline default's end-to-end sanity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import sample_photo

from deepfeat.exceptions import LayerNotFoundError, UnknownBackboneError, WeightsUnavailableError
from deepfeat.featurize import Featurizer, list_backbones, resolve_backbone
from deepfeat.featurize.decode import decode_image
from deepfeat.featurize.offline import OFFLINE_ZOO

ZOO = [m.name for m in OFFLINE_ZOO]

# ImageNet-1k classes 281-285 are the domestic cats; 967 is espresso.
CAT_CLASSES = set(range(281, 286))
ESPRESSO = 967


@pytest.fixture(scope="module", params=ZOO)
def zoo_model(request):
    rb = resolve_backbone(request.param)
    return rb, rb.build()


@pytest.fixture(scope="module")
def default_model():
    rb = resolve_backbone("efficientnet_lite0")
    return rb, rb.build()


def _top5(rb, model, arr):
    img = decode_image(arr)
    x = rb.preprocess.normalize(rb.preprocess.geometry(img)[None])
    with torch.inference_mode():
        return model(x).softmax(-1)[0].topk(5).indices.tolist()


def test_offline_zoo_ranks_chelsea_as_cat_and_coffee_as_espresso(zoo_model):
    rb, model = zoo_model
    assert rb.offline
    assert rb.preprocess.mean == (0.5, 0.5, 0.5) and rb.preprocess.interpolation == "bicubic"
    assert _top5(rb, model, sample_photo("chelsea"))[0] in CAT_CLASSES
    assert _top5(rb, model, sample_photo("coffee"))[0] == ESPRESSO


@pytest.mark.parametrize("name", ZOO)
def test_random_weights_do_not_recognise_the_cat(name):
    # negative control: the same pipeline without the pretrained weights fails the check
    rb = resolve_backbone(name, weights=None)
    model = rb.build()
    assert _top5(rb, model, sample_photo("chelsea"))[0] not in CAT_CLASSES
    assert _top5(rb, model, sample_photo("coffee"))[0] != ESPRESSO


@pytest.mark.parametrize(("name", "size"), [("efficientnet_lite0", 224), ("efficientnet_lite1", 240),
                                            ("efficientnet_lite2", 260)])
def test_offline_zoo_preprocessing_is_timms_for_the_same_architecture(name, size):
    import timm

    m = {m.name: m for m in OFFLINE_ZOO}[name]
    cfg = timm.models.get_pretrained_cfg(m.timm_arch)
    pre = resolve_backbone(name).preprocess
    assert pre.crop == (size, size) == tuple(cfg.input_size[1:])
    assert pre.resize == int(size / cfg.crop_pct) and pre.interpolation == cfg.interpolation


def test_each_zoo_model_is_a_feature_space_of_its_own():
    fps = {Featurizer(n, device="cpu", precision="fp32").fingerprint for n in ZOO}
    assert len(fps) == len(ZOO)


def test_penultimate_embedding_feeds_the_classifier(default_model):
    """The default cut is exactly the classifier's input: head(embedding) == full model."""
    rb, model = default_model
    f = Featurizer(device="cpu", precision="fp32")
    emb = f.featurize([sample_photo("coffee")]).features
    assert emb.shape == (1, 1280)
    logits = model.get_classifier()(torch.from_numpy(emb))
    assert int(logits.argmax()) == ESPRESSO


@pytest.mark.parametrize(
    ("name", "layer", "pool", "dim"),
    [
        # torchvision ResNet-18: layer3 has 256 channels, layer2 128 (torchvision docs)
        ("torchvision:resnet18", "layer3", "gem", 256),
        ("torchvision:resnet18", "layer2.1.relu_1", "avg", 128),
        # timm ResNet-18 feature_info: layer2 -> 128 channels; EfficientNet-Lite0 blocks.4 -> 112
        ("timm:resnet18", "layer2", "avgmax", 128),
        ("efficientnet_lite0", "blocks.4", "max", 112),
    ],
)
def test_random_weight_backbones_cut_at_named_layers(name, layer, pool, dim):
    f = Featurizer(name, layer=layer, pool=pool, weights=None, device="cpu", precision="fp32")
    res = f.featurize([np.full((40, 50, 3), 128, np.uint8), sample_photo("rocket")])
    assert res.features.shape == (2, dim)
    assert np.isfinite(res.features).all()
    assert not np.allclose(res.features[0], res.features[1])


def test_random_weights_are_seeded_and_reproducible():
    a = Featurizer("torchvision:resnet18", weights=None, device="cpu").featurize([sample_photo("coins")])
    b = Featurizer("torchvision:resnet18", weights=None, device="cpu").featurize([sample_photo("coins")])
    np.testing.assert_allclose(a.features, b.features, rtol=1e-5, atol=1e-6)


def test_unknown_layer_suggests_close_matches():
    f = Featurizer("torchvision:resnet18", layer="layr3", weights=None, device="cpu")
    with pytest.raises(LayerNotFoundError, match="layer3"):
        f.featurize([sample_photo("coins")])


def test_unknown_backbone_suggests_close_matches():
    with pytest.raises(UnknownBackboneError, match="resnet50"):
        resolve_backbone("torchvision:resnt50")


def test_offline_weights_fail_in_one_line_naming_the_alternatives(monkeypatch):
    def no_network(*a, **k):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    rb = resolve_backbone("torchvision:resnet18")
    with pytest.raises(WeightsUnavailableError) as err:
        rb.build()
    msg = str(err.value)
    assert "\n" not in msg and "efficientnet_lite0" in msg and "--checkpoint" in msg


def test_local_checkpoint_loads_and_is_part_of_the_identity(tmp_path):
    net = resolve_backbone("torchvision:resnet18", weights=None).build()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(0.5)
    ckpt = tmp_path / "r18.pth"
    torch.save(net.state_dict(), ckpt)
    f_ckpt = Featurizer("torchvision:resnet18", checkpoint=str(ckpt), device="cpu")
    f_rand = Featurizer("torchvision:resnet18", weights=None, device="cpu")
    assert f_ckpt.fingerprint != f_rand.fingerprint
    assert f_ckpt.spec["weights_id"].startswith("checkpoint:r18.pth:sha256=")
    x = [sample_photo("astronaut")]
    assert not np.allclose(f_ckpt.featurize(x).features, f_rand.featurize(x).features)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsUnavailableError, match="bad.pth"):
        Featurizer("torchvision:resnet18", checkpoint=str(bad), device="cpu").featurize(x)


def test_preprocessing_comes_from_each_model():
    tv = resolve_backbone("torchvision:resnet18").preprocess
    lite = resolve_backbone("efficientnet_lite0").preprocess
    vit = resolve_backbone("timm:vit_base_patch16_224").preprocess
    assert tv.mean == pytest.approx((0.485, 0.456, 0.406)) and tv.interpolation == "bilinear"
    assert lite.mean == (0.5, 0.5, 0.5) and lite.interpolation == "bicubic"
    assert tv.resize == 256 and tv.crop == (224, 224)
    assert vit.mean == pytest.approx((0.5, 0.5, 0.5))


def test_list_backbones_marks_offline_default():
    rows = {r["name"]: r for r in list_backbones()}
    assert all(rows[n]["offline"] is True for n in ZOO)
    assert "torchvision:resnet50" in rows and "timm:resnet50" in rows
    assert all(r["name"].startswith("torchvision:") for r in list_backbones("torchvision:vit*"))
