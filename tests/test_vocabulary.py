"""Several names and prompt templates per class for LSeg training (issue 17, item 5)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from attnseg.cli import main
from attnseg.engine.vocabulary import LabelVocabulary, VocabularyError, load_names

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["sky", "building", "pole", "road", "pavement", "tree", "sign symbol", "fence", "car", "pedestrian",
           "bicyclist"]


def test_draw_is_a_function_of_seed_and_iteration_and_covers_the_lists():
    v = LabelVocabulary(["sky", "car"], {"car": ["vehicle", "taxi"]}, ["{}", "a photo of a {}."], seed=3)
    assert v.draw(7) == v.draw(7) == LabelVocabulary(["sky", "car"], {"car": ["vehicle", "taxi"]},
                                                     ["{}", "a photo of a {}."], seed=3).draw(7)  # resume-exact
    seen = {tuple(v.draw(i)) for i in range(200)}
    cars = {s[1] for s in seen}
    assert cars == {f.format(n) for f in ["{}", "a photo of a {}."] for n in ["car", "vehicle", "taxi"]}
    assert {s[0] for s in seen} == {"sky", "a photo of a sky."}
    assert LabelVocabulary(["sky", "car"], seed=4).draw(7) == ["sky", "car"] and not LabelVocabulary(["a"]).varies


def test_bad_vocabularies_are_refused_with_the_reason():
    with pytest.raises(VocabularyError, match="both"):
        LabelVocabulary(["car", "bus"], {"car": ["vehicle"], "bus": ["Vehicle"]})
    with pytest.raises(VocabularyError, match="does not"):
        LabelVocabulary(["car"], {"lorry": ["truck"]})
    with pytest.raises(VocabularyError, match="exactly one"):
        LabelVocabulary(["car"], templates=["a photo"])
    with pytest.raises(VocabularyError, match="not a file"):
        load_names("no/such/names.yaml")


def test_shipped_vocabulary_never_contains_a_held_out_name():
    names = load_names(ROOT / "configs" / "vocab" / "camvid_label_names.yaml")
    held = yaml.safe_load((ROOT / "configs" / "vocab" / "camvid_heldout_names.yaml").read_text())["names"]
    from attnseg.tools.label_study import CAMVID_SYNONYMS

    assert held == CAMVID_SYNONYMS and len(held) == len(CLASSES)
    v = LabelVocabulary(CLASSES, names)
    for opts in v.choices:
        for n in opts:
            assert not any(h in n.split() or h == n for h in held), n
    assert all(len(o) >= 4 for o in v.choices)


def test_engine_trains_lseg_on_drawn_names_and_templates(camvid_root, tmp_path, monkeypatch):
    from attnseg.models import text

    calls = []
    real = text.TextEncoder.encode

    def spy(self, labels):
        calls.append(list(labels))
        return real(self, labels)

    monkeypatch.setattr(text.TextEncoder, "encode", spy)
    rc = main(["train", "--set", "model.name=lseg-tiny", "--set", f"data.root={camvid_root}", "--set", "data.limit=2",
               "--set", "data.val_limit=1", "--set", "data.crop=[64,64]", "--set", "data.batch_size=2",
               "--set", "data.workers=0", "--set", "train.iters=4", "--set", "train.val_interval=4",
               "--set", f"data.label_names={ROOT / 'configs' / 'vocab' / 'camvid_label_names.yaml'}",
               "--set", 'data.label_templates=["{}", "a photo of a {}."]',
               "--set", "train.tensorboard=false", "--work-dir", str(tmp_path)])
    assert rc == 0
    drawn = [c for c in calls if c != CLASSES]  # validation and saving use the class names
    assert len(drawn) >= 3 and len({tuple(c) for c in drawn}) >= 3  # a new draw per iteration
    assert all(len(c) == 11 for c in drawn)
    import attnseg

    assert attnseg.load_model(tmp_path / "final.safetensors").default_labels == CLASSES


def test_label_names_on_a_fixed_class_model_is_one_line(camvid_root, tmp_path, capsys):
    rc = main(["train", "--set", "model.name=segformer-tiny", "--set", f"data.root={camvid_root}",
               "--set", "data.label_templates=[\"a {}\"]", "--set", "train.iters=1", "--work-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc != 0 and "LSeg" in err and "Traceback" not in err
