"""`mmlib doctor`: versions, build, device, profile, cache, prepared models, full weights."""

import os

from mmlib.tools.cli import main
from mmlib.tools.doctor import disk_free, doctor, doctor_report, torch_build


def test_doctor_reports_versions_device_profile_cache_and_full_weights(tmp_home, capsys):
    report = doctor("tiny")
    out = capsys.readouterr().out
    for key in ("torch", "torch build", "open_clip_torch", "device", "profile", "cache_dir"):
        assert key in report and key in out
    assert report["torch build"] == torch_build()
    assert report["cache_dir"] == str(tmp_home)
    assert report["tiny models prepared"].startswith("not yet: tiny-clip")
    assert any(k.startswith("full: ") and v == "missing" for k, v in report.items())
    assert "mmlib zoo download full" in out
    assert os.environ.get("HF_HUB_OFFLINE") == "1"


def test_torch_build_names_cuda_or_cpu(monkeypatch):
    import torch

    monkeypatch.setattr(torch.version, "cuda", "12.8")
    assert torch_build() == "CUDA 12.8"
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(torch.version, "hip", None, raising=False)
    assert torch_build() == "CPU only"


def test_doctor_command_prints_every_line_of_the_report(tmp_home, capsys):
    assert main(["doctor"]) == 0
    printed = {
        line.split("  ")[0]: line.split("  ", 1)[1].strip()
        for line in capsys.readouterr().out.splitlines()
        if "  " in line and not line.startswith(" ")
    }
    report = doctor_report()
    assert printed["profile"] == report["profile"] == "tiny"
    assert printed["cache_dir"] == str(tmp_home) and printed["device"] == report["device"]


def test_disk_free_is_read_where_the_cache_would_go_even_before_it_exists(tmp_path):
    import shutil

    expected = shutil.disk_usage(tmp_path).free / 1024**3
    free = disk_free(tmp_path / "not" / "yet")
    assert free.endswith(" GB") and abs(float(free[:-3]) - expected) < 1.0
