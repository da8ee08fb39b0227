from pathlib import Path

import pytest

from p13n_utils import config


def test_size_resolution_order(monkeypatch):
    monkeypatch.delenv("P13N_RUN_SIZE", raising=False)
    assert config.resolve_size() == "default"
    monkeypatch.setenv("P13N_RUN_SIZE", "full")
    assert config.resolve_size() == "full"
    assert config.resolve_size("smoke") == "smoke"  # the papermill parameter wins


def test_unknown_size_lists_valid_ones(monkeypatch):
    with pytest.raises(ValueError, match="smoke, default, full"):
        config.resolve_size("bogus")
    monkeypatch.setenv("P13N_RUN_SIZE", "tiny")
    with pytest.raises(ValueError, match="tiny"):
        config.get_sizes()


def test_sizes_table_is_complete_and_indexable():
    for key, values in config.SIZES.items():
        assert len(values) == len(config.SIZE_NAMES), key
    smoke, default = config.get_sizes("smoke"), config.get_sizes("default")
    assert smoke["bootstrap.n_resamples"] < default["bootstrap.n_resamples"]
    with pytest.raises(KeyError, match="no size"):
        smoke["does.not.exist"]


def test_device_override(monkeypatch):
    monkeypatch.setenv("P13N_DEVICE", "cpu")
    assert config.get_device() == "cpu"
    assert config.get_device("cuda:1") == "cuda:1"
    with pytest.raises(ValueError, match="unknown device"):
        config.get_device("tpu")
    monkeypatch.delenv("P13N_DEVICE")
    assert config.get_device() in ("cuda", "mps", "cpu")


def test_set_seed_makes_numpy_and_torch_repeatable():
    import numpy as np
    import torch

    config.set_seed(3)
    a = np.random.rand(3), torch.rand(3)
    config.set_seed(3)
    b = np.random.rand(3), torch.rand(3)
    assert np.array_equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_limit_threads_caps_blas():
    from threadpoolctl import threadpool_info

    import torch

    assert config.limit_threads(2) == 2
    assert torch.get_num_threads() == 2
    assert all(pool["num_threads"] == 1 for pool in threadpool_info() if pool["user_api"] == "blas")


def test_setup_returns_sizes(monkeypatch, tmp_path):
    monkeypatch.setenv("P13N_FIGURES_DIR", str(tmp_path / "figs"))
    cfg = config.setup("smoke")
    assert cfg.name == "smoke" and cfg.device == config.get_device()
    assert config.figures_dir() == tmp_path / "figs" and (tmp_path / "figs").is_dir()


def test_atomic_write_text_and_bytes_leave_no_temporary_files(tmp_path):
    target = config.atomic_write(tmp_path / "sub" / "a.json", '{"x": 1}')
    assert target.read_text() == '{"x": 1}' and oct(target.stat().st_mode)[-3:] == "644"
    config.atomic_write(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["a.json"]


def test_display_path_hides_the_machine_specific_prefix(tmp_path):
    inside = config.REPO_ROOT / "build" / "cache" / "adapters"
    assert config.display_path(inside) == str(Path("build") / "cache" / "adapters")
    assert config.display_path(tmp_path) == str(tmp_path)  # outside the repository: unchanged
