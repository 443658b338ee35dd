"""Texts through the library: encoders, sources, cache, TransferClassifier, save/load."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from sklearn.base import clone
from text_data import QUICK, RUNTIME, SENTIMENT_CSV, sentiment, split, text_cache

from deepfeat.classify import EmbeddingClassifier, TextEmbedder, TransferClassifier, load, save
from deepfeat.exceptions import InputError, InvalidParameterError
from deepfeat.featurize.backbones import backbone_modality, list_backbones
from deepfeat.featurize.text_featurizer import TextFeaturizer
from deepfeat.featurize.text_sources import read_texts

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    return text_cache(tmp_path_factory)


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    return split()


@pytest.fixture(scope="module")
def fitted(data, cache) -> TransferClassifier:
    return TransferClassifier(TextEmbedder(cache=cache, **RUNTIME), EmbeddingClassifier(**QUICK),
                              spaces=None).fit(data["X"], data["y"])


def test_the_registry_knows_what_each_backbone_reads():
    rows = {r["name"]: r for r in list_backbones(families=False)}
    assert rows["minilm"]["modality"] == "text" and rows["tfidf"]["modality"] == "text"
    assert rows["efficientnet_lite0"]["modality"] == "image"
    assert backbone_modality("hf:sentence-transformers/all-mpnet-base-v2") == "text"


def test_sentiment_fit_beats_its_shuffled_label_control(fitted, data, cache):
    acc = np.mean(fitted.predict(data["X_test"]) == data["y_test"])
    shuffled = np.random.default_rng(0).permutation(data["y"])
    control = clone(fitted).fit(data["X"], shuffled)
    acc_control = np.mean(control.predict(data["X_test"]) == data["y_test"])
    assert acc >= 0.75, acc
    assert acc > acc_control + 0.15, (acc, acc_control)


def test_mean_pooling_agrees_with_sentence_transformers(data):
    st = pytest.importorskip("sentence_transformers")
    from deepfeat.featurize.text_encoders import minilm_path

    texts = list(data["X_test"][:6])
    ours = TextFeaturizer(**RUNTIME).featurize(texts).features
    ref = st.SentenceTransformer(minilm_path(), device="cpu").encode(texts)  # ends with Normalize
    ours = ours / np.linalg.norm(ours, axis=1, keepdims=True)
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_length_bucketing_gives_the_rows_of_one_text_at_a_time(data):
    texts = list(data["X"][:12])
    f = TextFeaturizer(**RUNTIME, batch_size=5)
    together = f.featurize(texts).features
    alone = np.vstack([f.featurize([t]).features for t in texts[:3]])
    np.testing.assert_allclose(together[:3], alone, atol=2e-5)


def test_a_second_run_encodes_nothing(data, tmp_path):
    texts = list(data["X"][:10])
    path = str(tmp_path / "c.h5")
    first = TextFeaturizer(**RUNTIME, cache=path).featurize(texts)
    again = TextFeaturizer(**RUNTIME, cache=path)  # a new object: only the cache is shared
    second = again.featurize(texts + texts[:2])
    assert first.summary["featurized"] == 10
    assert second.summary["featurized"] == 0 and second.summary["cached"] == 10
    assert again.forward_passes == 0 and not again.built
    np.testing.assert_array_equal(first.features, second.features[:10])


def test_the_space_changes_with_layer_pooling_and_window(data):
    base = TextFeaturizer(**RUNTIME)
    others = [TextFeaturizer(**RUNTIME, layer="encoder.layer.2"), TextFeaturizer(**RUNTIME, pool="cls"),
              TextFeaturizer(**RUNTIME, max_length=64)]
    assert len({base.fingerprint, *(o.fingerprint for o in others)}) == 4


def test_texts_beyond_the_window_are_truncated_and_counted():
    f = TextFeaturizer(**RUNTIME, max_length=8)
    res = f.featurize(["short one", "this sentence is certainly longer than eight tokens in all"])
    assert res.summary["truncated"] == 1 and res.ok.all()


@pytest.mark.slow  # bf16 is emulated on this CPU: ~8 s
def test_bf16_rows_agree_with_fp32(data):
    texts = list(data["X"][:8])
    a = TextFeaturizer(device="cpu", precision="fp32").featurize(texts).features
    b = TextFeaturizer(device="cpu", precision="bf16").featurize(texts).features
    cos = np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.98, cos
    assert TextFeaturizer(device="cpu", precision="bf16").fingerprint != TextFeaturizer(**RUNTIME).fingerprint


def test_empty_texts_fail_one_by_one_and_cached_rows_stay(data, tmp_path, caplog):
    path = str(tmp_path / "c.h5")
    f = TextFeaturizer(**RUNTIME, cache=path)
    f.featurize([data["X"][0]])
    with caplog.at_level(logging.WARNING):
        res = f.featurize([data["X"][0], "", "   \t"])
    assert res.ok.tolist() == [True, False, False]
    assert [x["reason"] for x in res.failures] == ["empty text", "whitespace-only text"]
    assert res.summary["cached"] == 1
    assert TextFeaturizer(**RUNTIME, cache=path).featurize([data["X"][0]]).summary["cached"] == 1


def test_an_image_backbone_refuses_texts_and_the_reverse(data):
    from deepfeat.classify import ImageEmbedder
    from deepfeat.classify.text_embedder import TextEmbedder

    with pytest.raises(InvalidParameterError, match="text encoder"):
        ImageEmbedder("minilm").fit(list(data["X"][:2]))
    with pytest.raises(InvalidParameterError, match="reads images"):
        TextFeaturizer("efficientnet_lite0")
    with pytest.raises(InputError, match="image backbone"):
        TextEmbedder().fit(np.zeros((2, 8, 8, 3), np.uint8))


def test_sources_name_each_bad_row(tmp_path):
    p = tmp_path / "t.csv"
    p.write_bytes(b"text,label\ngood phone,pos\n   ,neg\nbad \xff bytes,neg\nno label,\nfine,neg\n")
    ds = read_texts(p)
    assert ds.texts == ["good phone", "fine"]
    assert [(f["row"], f["reason"]) for f in ds.failed] == [
        ("line 3", "whitespace-only text"),
        ("line 4", "undecodable bytes (byte 0xff is not valid utf-8)"),
        ("line 5", "empty label"),
    ]
    with pytest.raises(InputError, match=r"missing column\(s\) 'review'; columns found: text, label"):
        read_texts(p, text_col="review")
    lines = tmp_path / "t.txt"
    lines.write_text("one\n\ntwo\n")
    ds = read_texts(lines)
    assert ds.texts == ["one", "two"] and ds.labels is None and ds.failed[0]["row"] == "line 2"


def test_a_folder_of_class_folders(tmp_path):
    for cls, texts in {"pos": ["great", "lovely"], "neg": ["awful"]}.items():
        (tmp_path / cls).mkdir()
        for i, t in enumerate(texts):
            (tmp_path / cls / f"{i}.txt").write_text(t + "\n")
    ds = read_texts(tmp_path)
    assert sorted(zip(ds.labels, ds.texts)) == [("neg", "awful"), ("pos", "great"), ("pos", "lovely")]


def test_the_fixture_file_reads_whole():
    ds = read_texts(SENTIMENT_CSV)
    X, y = sentiment()
    assert ds.texts == list(X) and ds.labels == list(y) and not ds.failed


def test_save_load_round_trip(fitted, data, tmp_path):
    path = tmp_path / "m.joblib"
    save(fitted, path)
    back = load(path)
    np.testing.assert_array_equal(back.predict_proba(data["X_test"]), fitted.predict_proba(data["X_test"]))
    table = back.predict_table(["a lovely, friendly place", ""])
    assert list(table.columns[:2]) == ["text", "label"] and table["status"].tolist() == ["ok", "empty text"]


@pytest.mark.slow  # five spaces cross-validated: ~16 s on a loaded 2-core machine
def test_auto_spaces_try_layers_pooling_and_tfidf(data, cache):
    clf = TransferClassifier(TextEmbedder(cache=cache, **RUNTIME), EmbeddingClassifier(**QUICK)).fit(data["X"], data["y"])
    names = [r["space"] for r in clf.selection_["spaces"]]
    assert "minilm+tfidf" in names and "minilm:cls" in names and any("@encoder.layer" in n for n in names)
    assert np.mean(clf.predict(data["X_test"]) == data["y_test"]) >= 0.75
