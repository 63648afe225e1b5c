"""Model packs: export -> import gives a MMLIB_HOME where nothing trains; every bad pack is a
clear error and leaves MMLIB_HOME as it was."""

import errno
import json
import shutil
import zipfile

import pytest

from mmlib import __version__, tiny_generators, tiny_models, zoo
from mmlib.store import model_cache, packs
from mmlib.store.checkpoints import model_dir_complete
from mmlib.store.fetch import DownloadError
from mmlib.tools.cli import main


@pytest.fixture
def pack(tmp_path, fake_prepared_home):
    home = fake_prepared_home(tmp_path / "made")
    return packs.export_pack(tmp_path / "pack.zip", home)


def models_in(home):
    folder = home / "models"
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def test_a_pack_imports_into_a_fresh_home_and_every_model_is_there(pack, tmp_path):
    home = tmp_path / "fresh"
    names = packs.import_pack(pack, home)
    assert names == list(zoo.tiny_folders(home)) and zoo.missing_models(home) == []
    assert packs.import_pack(pack, home) == names  # again: nothing changes, nothing breaks
    with zipfile.ZipFile(pack) as zf:
        info = json.loads(zf.read("manifest.json"))
    assert info["mmlib_version"] == __version__ and set(info["models"]) == set(names)


def test_export_refuses_an_unprepared_home(tmp_path, fake_prepared_home):
    with pytest.raises(packs.PackError, match="mmlib zoo prepare"):
        packs.export_pack(tmp_path / "p.zip", tmp_path / "empty")
    with pytest.raises(ValueError, match=".zip"):
        packs.export_pack(tmp_path / "p.tar", fake_prepared_home(tmp_path / "h"))


def _write(path, data):
    path.write_bytes(data)
    return path


def _rewrite(pack, out, change):
    """Copy a pack, letting change(name, data) alter (or drop, returning None) each member."""
    with zipfile.ZipFile(pack) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            data = change(item.filename, src.read(item.filename))
            if data is not None:
                dst.writestr(item.filename, data)
    return out


@pytest.mark.parametrize(
    "make,message",
    [
        (
            lambda p, t: _write(t, p.read_bytes()[: p.stat().st_size // 2]),
            "not a complete",
        ),
        (lambda p, t: _write(t, b"<!DOCTYPE html><html>404</html>"), "HTML page"),
        (
            lambda p, t: _rewrite(
                p,
                t,
                lambda n, d: (
                    d.replace(b"tiny-clip", b"tiny-clap") if n.endswith(".safetensors") else d
                ),
            ),
            "altered or damaged",
        ),
        (
            lambda p, t: _rewrite(
                p,
                t,
                lambda n, d: (
                    d.replace(__version__.encode(), b"0.0.9") if n == "manifest.json" else d
                ),
            ),
            "made by mmlib 0.0.9",
        ),
        (
            lambda p, t: _rewrite(
                p,
                t,
                lambda n, d: (
                    json.dumps(
                        {
                            **json.loads(d),
                            "models": {
                                **json.loads(d)["models"],
                                "tiny-vqgan": {"folder": "tiny-vqgan-0000000000", "files": {}},
                            },
                        }
                    ).encode()
                    if n == "manifest.json"
                    else d
                ),
            ),
            "other model recipes",
        ),
        (lambda p, t: _rewrite(p, t, lambda n, d: None if n == "manifest.json" else d), "manifest"),
        (
            lambda p, t: _rewrite(
                p, t, lambda n, d: None if "tiny-dalle" in n and "mmlib" in n else d
            ),
            "lacks",
        ),
    ],
    ids=[
        "truncated",
        "html",
        "altered-file",
        "other-version",
        "other-config",
        "no-manifest",
        "missing-file",
    ],
)
def test_a_bad_pack_is_refused_and_nothing_is_half_imported(pack, tmp_path, make, message):
    bad = make(pack, tmp_path / "bad.zip")
    home = tmp_path / "fresh"
    with pytest.raises((packs.PackError, ValueError), match=message):
        packs.import_pack(bad, home)
    assert models_in(home) == []  # no folder, no leftover staging folder


def test_a_full_disk_during_import_leaves_the_home_as_it_was(pack, tmp_path, monkeypatch):
    home = tmp_path / "fresh"
    (home / "models" / "someone-elses-model").mkdir(parents=True)
    calls = {"n": 0}

    def fills_up(out, chunk):
        calls["n"] += 1
        if calls["n"] > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        out.write(chunk)

    monkeypatch.setattr(packs, "_write", fills_up)
    with pytest.raises(packs.PackError, match="not enough disk space"):
        packs.import_pack(pack, home)
    assert models_in(home) == ["someone-elses-model"]


def test_a_crash_while_moving_folders_in_rolls_back_the_ones_already_moved(
    pack, tmp_path, monkeypatch
):
    home = tmp_path / "fresh"
    real, calls = packs.os.replace, {"n": 0}

    def dies_on_the_third(src, dst):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.EIO, "the disk went away")
        real(src, dst)

    monkeypatch.setattr(packs.os, "replace", dies_on_the_third)
    with pytest.raises(OSError, match="went away"):
        packs.import_pack(pack, home)
    assert models_in(home) == []


def test_an_unreachable_url_says_so_and_imports_nothing(tmp_path):
    with pytest.raises(DownloadError, match="cannot reach"):
        packs.fetch_and_import("http://127.0.0.1:9/mmlib-tiny.zip", home=tmp_path / "h")
    assert models_in(tmp_path / "h") == []


def test_the_commands_export_and_import_and_report_errors_in_one_line(
    tmp_path, capsys, monkeypatch, fake_prepared_home
):
    made = fake_prepared_home(tmp_path / "made")
    monkeypatch.setenv("MMLIB_HOME", str(made))
    assert main(["zoo", "export", str(tmp_path / "p.zip")]) == 0
    assert "mmlib zoo import p.zip" in capsys.readouterr().out
    monkeypatch.setenv("MMLIB_HOME", str(tmp_path / "fresh"))
    assert main(["zoo", "import", str(tmp_path / "p.zip")]) == 0
    assert f"imported {len(zoo.tiny_folders())} models" in capsys.readouterr().out
    (tmp_path / "junk.zip").write_text("<html>not found</html>")
    assert main(["zoo", "import", str(tmp_path / "junk.zip")]) == 2
    err = capsys.readouterr().err
    assert "HTML page" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_no_training_mode_refuses_to_train_and_says_what_to_do(tmp_home, monkeypatch):
    monkeypatch.setenv("MMLIB_NO_TRAINING", "1")
    with pytest.raises(model_cache.NotPreparedError, match="mmlib zoo import"):
        tiny_models.tiny_vqgan_dir()


@pytest.mark.slow
def test_the_prepared_models_travel_in_a_pack_and_load_without_training(
    prepared, tmp_path, monkeypatch
):
    pack = packs.export_pack(tmp_path / "tiny.zip")
    size_mb = pack.stat().st_size / 1e6
    fresh = tmp_path / "fresh"
    packs.import_pack(pack, fresh)
    monkeypatch.setenv("MMLIB_HOME", str(fresh))
    monkeypatch.setenv("MMLIB_NO_TRAINING", "1")  # anything missing would fail, not train
    assert zoo.missing_models() == []
    assert zoo.get_clip("tiny", device="cpu").model is not None
    assert tiny_generators.get_dalle(device="cpu").config.n_image == 64
    assert len(tiny_generators.vqgan_clip_results()["prompts"]) == 20
    for name, folder in zoo.tiny_folders().items():
        assert model_dir_complete(folder), name
    shutil.rmtree(fresh)
    print(f"pack of the prepared tiny profile: {size_mb:.1f} MB")
