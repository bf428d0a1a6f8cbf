"""Several names and prompt templates per class for LSeg training."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
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


@pytest.mark.parametrize("vocab", ["camvid_label_names.yaml", "camvid_label_names_wide.yaml"])
def test_shipped_vocabularies_never_contain_a_held_out_or_development_name(vocab):
    """Held-out names (scored on test) never appear in a training name as a word or plural; development names
    (scored on validation to choose a recipe) never appear inside one at all."""
    import re

    names = load_names(ROOT / "configs" / "vocab" / vocab)
    held = yaml.safe_load((ROOT / "configs" / "vocab" / "camvid_heldout_names.yaml").read_text())["names"]
    dev = yaml.safe_load((ROOT / "configs" / "vocab" / "camvid_dev_names.yaml").read_text())
    from attnseg.analysis.label_study import CAMVID_SYNONYMS

    assert held == CAMVID_SYNONYMS and len(held) == len(CLASSES)
    assert set(dev) == {"dev_a", "dev_b"} and all(len(v) == len(CLASSES) for v in dev.values())
    dev_names = [n for v in dev.values() for n in v]
    assert not set(dev_names) & set(held) and not set(dev_names) & set(CLASSES)
    v = LabelVocabulary(CLASSES, names)
    for opts in v.choices:
        for n in opts:
            assert not any(re.search(rf"\b{re.escape(h)}(s|es)?\b", n, re.I) for h in held), n
            assert not any(d.lower() in n.lower() for d in dev_names), n
    assert all(len(o) >= 4 for o in v.choices)
    if vocab.endswith("_wide.yaml"):  # the wider list keeps every name of the first one
        first = LabelVocabulary(CLASSES, load_names(ROOT / "configs" / "vocab" / "camvid_label_names.yaml"))
        assert all(set(a) <= set(b) and len(b) >= 12 for a, b in zip(first.choices, v.choices))


def test_label_noise_is_a_resumable_perturbation_of_unit_length():
    class Fixed:  # a text encoder giving every prompt the same unit vector per class position
        def encode(self, prompts):
            return torch.nn.functional.normalize(torch.arange(1.0, 1 + 64 * len(prompts)).view(len(prompts), 64), dim=1)

    plain = LabelVocabulary(["sky", "car"], seed=3)
    assert not plain.varies and torch.equal(plain.embeddings(Fixed(), 5), Fixed().encode(["sky", "car"]))
    v = LabelVocabulary(["sky", "car"], seed=3, noise=0.5)
    a, b = v.embeddings(Fixed(), 5), v.embeddings(Fixed(), 6)
    assert v.varies and torch.equal(a, LabelVocabulary(["sky", "car"], seed=3, noise=0.5).embeddings(Fixed(), 5))
    assert not torch.equal(a, b)  # a new draw every iteration
    assert torch.allclose(a.norm(dim=1), torch.ones(2))
    cos = (a * Fixed().encode(["sky", "car"])).sum(1)
    assert ((cos > 0.8) & (cos < 0.97)).all()  # sigma 0.5: cosine ~ 1/sqrt(1.25) = 0.89 to the clean embedding
    with pytest.raises(VocabularyError, match="label_noise"):
        LabelVocabulary(["sky"], noise=-1)


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
    rc = main(["train", "--set", "model.name=lseg-tiny", "--set", f"data.root={camvid_root}",
               "--set", "data.label_noise=-0.1", "--set", "train.iters=1", "--work-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc != 0 and "data.label_noise" in err and ">= 0" in err and "Traceback" not in err


def _train_tiny_lseg(root, work, *sets):
    return main(["train", "--set", "model.name=lseg-tiny", "--set", f"data.root={root}", "--set", "data.limit=2",
                 "--set", "data.val_split=''", "--set", "data.crop=[64,64]", "--set", "data.batch_size=2",
                 "--set", "data.workers=0", "--set", "train.iters=3", "--set", "train.tensorboard=false",
                 "--set", f"data.label_names={ROOT / 'configs' / 'vocab' / 'camvid_label_names.yaml'}",
                 "--set", 'data.label_templates=["{}", "a photo of a {}."]', *sets, "--work-dir", str(work)])


def test_a_text_table_trains_exactly_as_its_encoder_and_refuses_what_it_lacks(camvid_root, tmp_path, capsys):
    """data.text_table serves the encoder's own embeddings of every prompt the run can draw: the run's weights
    equal those of the run that loads the encoder; a prompt outside the table or a fixed-class model is one line."""
    from safetensors.torch import load_file

    from attnseg.models import text

    table = tmp_path / "table.safetensors"
    sets = ["--set", "model.name=lseg-tiny", "--set", f"data.root={camvid_root}",
            "--set", f"data.label_names={ROOT / 'configs' / 'vocab' / 'camvid_label_names.yaml'}",
            "--set", 'data.label_templates=["{}", "a photo of a {}."]']
    assert main(["text-table", "--config", str(ROOT / "configs" / "lseg-effnet-lite2_camvid_vocab.yaml"), *sets,
                 "--out", str(table)]) == 0
    assert main(["text-table", "--config", str(ROOT / "configs" / "lseg-effnet-lite2_camvid_vocab.yaml"),
                 "--out", str(table)]) == 2  # an existing table is never replaced silently
    assert "exists" in capsys.readouterr().err
    enc = text.TableEncoder(table)
    assert enc.spec == "minilm" and len(enc._cache) == 2 * sum(1 + len(v) for v in load_names(
        ROOT / "configs" / "vocab" / "camvid_label_names.yaml").values())
    assert _train_tiny_lseg(camvid_root, tmp_path / "encoder") == 0
    assert _train_tiny_lseg(camvid_root, tmp_path / "table", "--set", f"data.text_table={table}") == 0
    a, b = load_file(tmp_path / "encoder" / "final.safetensors"), load_file(tmp_path / "table" / "final.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert text.get_text_encoder("minilm") is not enc  # the table served only while its run trained
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(table), "pt") as f:  # the same strings, other vectors: the run must follow the table
        meta, emb = f.metadata(), f.get_tensor("embeddings")
    save_file({"embeddings": emb.roll(1, dims=0).contiguous()}, tmp_path / "rolled.safetensors", metadata=meta)
    assert _train_tiny_lseg(camvid_root, tmp_path / "rolled", "--set",
                            f"data.text_table={tmp_path / 'rolled.safetensors'}") == 0
    c = load_file(tmp_path / "rolled" / "final.safetensors")
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert _train_tiny_lseg(camvid_root, tmp_path / "noise", "--set", f"data.text_table={table}",
                            "--set", "data.label_noise=0.5") == 0  # label noise reaches the run
    d = load_file(tmp_path / "noise" / "final.safetensors")
    assert not all(torch.equal(b[k], d[k]) for k in b)

    capsys.readouterr()
    rc = _train_tiny_lseg(camvid_root, tmp_path / "more", "--set", f"data.text_table={table}",
                          "--set", 'data.label_templates=["{}", "the {}."]')
    err = capsys.readouterr().err
    assert rc != 0 and "are not in" in err and "the sky." in err and "Traceback" not in err
    rc = main(["train", "--set", "model.name=segformer-tiny", "--set", f"data.root={camvid_root}",
               "--set", f"data.text_table={table}", "--set", "train.iters=1", "--work-dir", str(tmp_path / "fixed")])
    err = capsys.readouterr().err
    assert rc != 0 and "data.text_table" in err and "LSeg" in err and "Traceback" not in err
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a table")
    with pytest.raises(text.TextEncoderError, match="not a table written by attnseg"):
        text.TableEncoder(bad)

