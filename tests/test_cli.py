"""The CLI tells the user's mistakes (exit 2, one line) from bugs in mmlib (exit 1, report it)."""

import json

from mmlib.tools import commands
from mmlib.tools.cli import main


def test_a_refusal_raised_by_mmlib_is_the_users_to_fix(tmp_home, capsys):
    assert main(["search", "query", "a red star:1.5.5", "--index", str(tmp_home / "i")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mmlib search: error:") and err.count("\n") == 1


def test_a_value_error_from_inside_a_library_mmlib_calls_is_a_bug(tmp_home, monkeypatch, capsys):
    # before: any ValueError was reported as the user's mistake, bugs in mmlib included
    monkeypatch.setattr(commands, "parse_query", lambda text: json.loads("{"))
    assert main(["search", "query", "a red star", "--index", str(tmp_home / "i")]) == 1
    err = capsys.readouterr().err
    assert "internal error (JSONDecodeError" in err and "please report it" in err


def test_a_missing_file_is_the_users_to_fix_wherever_it_is_noticed(tmp_home, monkeypatch, capsys):
    monkeypatch.setattr(commands, "parse_query", lambda text: open(tmp_home / "no-such-file"))
    assert main(["search", "query", "a red star", "--index", str(tmp_home / "i")]) == 2
    assert "No such file" in capsys.readouterr().err
