"""Optional parts name the extra that installs them when it is missing."""

from __future__ import annotations

import sys

import pytest

from stream import cli
from stream.errors import MissingExtra, optional


def test_a_missing_optional_module_names_the_extra_that_installs_it():
    with pytest.raises(MissingExtra) as raised:
        optional("learnstream_no_such_module", "report", "learnstream report")
    assert str(raised.value).startswith(
        "learnstream report needs the learnstream_no_such_module package:"
        " pip install 'learnstream[report]'"
    )


@pytest.mark.parametrize(
    ("blocked", "argv", "extra"),
    [
        ("matplotlib", ["report", "--bootstrap", "127.0.0.1:9"], "report"),
        ("onnx", ["model", "export", "--format", "onnx", "--offline"], "onnx"),
    ],
)
def test_a_command_whose_extra_is_missing_exits_2_with_one_line_naming_it(
    blocked, argv, extra, monkeypatch, tmp_path, capsys
):
    from stream.model.state import ModelState
    from stream.sync.checkpoint import CheckpointStore, Snapshot

    CheckpointStore(tmp_path).write(Snapshot(version=1, state=ModelState(weights={"a": 1.0})))
    monkeypatch.setitem(sys.modules, blocked, None)  # importing it raises ImportError
    code = cli.main([*argv, "--checkpoint-dir", str(tmp_path)] if "--offline" in argv else argv)
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"needs the {blocked} package: pip install 'learnstream[{extra}]'" in err
