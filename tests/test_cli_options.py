"""Shared CLI options (attnseg.cli.options): nonsense values exit 2 with one line and write nothing."""
import os

import pytest
from PIL import Image

from attnseg.cli import main
from tests.helpers import photo



BAD_FLAGS = [  # (command, flag, bad values): each must exit 2 with one line and write nothing
    ("predict", "--size", ["-5", "0", "nan", "inf", "1e9", "abc"]),
    ("predict", "--alpha", ["5", "-0.1", "nan", "inf"]),
    ("predict", "--crop", ["0", "-3", "1e9", "nan"]),
    ("predict", "--threads", ["0", "-1", "nan"]),
    ("predict", "--max-pixels", ["0", "-1", "nan", "inf"]),
    ("eval", "--scales", ["1e9", "inf", "nan", "0", "-1"]),
    ("eval", "--limit", ["0", "-2", "nan"]),
    ("benchmark", "--batch", ["0", "-1", "1e9"]),
    ("benchmark", "--iters", ["0", "inf"]),
    ("export", "--num-classes", ["0", "-1", "nan"]),
]


@pytest.mark.parametrize("cmd,flag,values", BAD_FLAGS)
def test_bad_numeric_flags_exit_2_in_one_line(tmp_path, cmd, flag, values, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Image.fromarray(photo()).save(tmp_path / "a.png")
    base = {"predict": ["predict", "a.png", "--model", "segformer-tiny"],
            "eval": ["eval", "--model", "m", "--dataset", "camvid", "--data-root", "."],
            "benchmark": ["benchmark", "--model", "segformer-tiny"],
            "export": ["export", "--model", "segformer-tiny", "--out", "m.onnx"]}[cmd]
    for v in values:
        with pytest.raises(SystemExit) as e:
            main([*base, f"{flag}={v}"])
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and len(err.splitlines()) == 1 and flag in err, (v, err)
    assert sorted(os.listdir(tmp_path)) == ["a.png"]
