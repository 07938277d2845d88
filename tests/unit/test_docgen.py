"""The generated blocks of docs/ match their generators (kafka_saga/docgen.py)."""

from __future__ import annotations

from pathlib import Path

from kafka_saga import docgen
from kafka_saga.config import KafkaSecurity, Settings, declared, role_variables


def test_the_committed_docs_match_the_generator(capsys) -> None:
    assert docgen.main(["--check"]) == 0, capsys.readouterr().err


def test_every_setting_has_a_row() -> None:
    table = docgen.settings_table()
    names = [spec["env"] for cls in (Settings, KafkaSecurity) for _, spec in declared(cls)]
    names += [name for name, _, _ in role_variables()]
    assert len(names) == len(set(names))
    assert all(f"| `{name}` |" in table for name in names)


def test_check_names_the_drifted_file(tmp_path: Path, capsys) -> None:
    stale = tmp_path / "configuration.md"
    stale.write_text("intro\n<!-- BEGIN GENERATED: settings -->\nold\n<!-- END GENERATED: settings -->\n"
                     "<!-- BEGIN GENERATED: not-ours -->\nkept\n<!-- END GENERATED: not-ours -->\n")
    assert docgen.main(["--check", str(stale)]) == 1
    assert str(stale) in capsys.readouterr().err
    assert docgen.main([str(stale)]) == 0
    text = stale.read_text()
    assert "\nold\n" not in text and "`KAFKA_BOOTSTRAP_SERVERS`" in text and "\nkept\n" in text
    assert docgen.main(["--check", str(stale)]) == 0
