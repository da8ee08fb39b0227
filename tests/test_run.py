import json
import subprocess
import sys
import time

import nbformat
import pytest

from p13n_utils import config, metric_registry, results, run


def _notebook(path, *sources):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("RUN_SIZE = None")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# test"), params]
    nb.cells += [nbformat.v4.new_code_cell(s) for s in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture
def notebooks(tmp_path, monkeypatch):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    monkeypatch.setattr(config, "NOTEBOOKS_DIR", folder)
    return folder


def test_select_notebooks_by_name_or_number(notebooks):
    for name in ("00_a", "01_b", "02_c"):
        _notebook(notebooks / f"{name}.ipynb")
    (notebooks / "scratch.ipynb").write_text("{}")  # not part of the series
    assert run.available_notebooks() == ["00_a", "01_b", "02_c"]
    assert run.select_notebooks(["02_c.ipynb", "00"]) == ["00_a", "02_c"]
    with pytest.raises(ValueError, match="valid notebooks: 00_a, 01_b, 02_c"):
        run.select_notebooks(["03_missing"])


def test_bogus_size_exits_2_naming_valid_sizes():
    proc = subprocess.run([sys.executable, "-m", "p13n_utils.run", "--size", "bogus"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "smoke, default, full" in proc.stderr


def test_inplace_requires_default_size():
    with pytest.raises(ValueError, match="--inplace"):
        run.run(size="smoke", inplace=True)


def test_runner_executes_records_aggregates_and_refreshes(notebooks, tmp_path):
    _notebook(notebooks / "01_ok.ipynb",
              "from p13n_utils import config, results\ncfg = config.setup(RUN_SIZE)",
              "results.record('toy', 'user', 'm', 'mae', 0.5 if cfg.name == 'default' else 0.7, 0.4, 0.6, n=3,"
              " set='toy-3u')\n"
              "import pandas as pd\n"
              "results.record_ci('toy', 'user', 'm', 'rmse', pd.Series([1.0, 2.0], index=pd.Index([7, 9], name='user')),"
              " n_resamples=50)\n"
              "print(cfg.name)")
    out = tmp_path / "out"
    summary = run.run("default", build_dir=tmp_path / "build", out_dir=out, inplace=True,
                      progress=False)
    record = json.loads((tmp_path / "build/results/01_ok.json").read_text())
    assert record["size"] == "default" and record["seconds"] > 0
    assert record["peak_mb"] > 20  # a python kernel with pandas imported
    assert record["lm_dtype"] in ("bfloat16", "float32") and record["cpu"]
    assert record["rows"][0] == dict(task="toy", level="user", method="m", metric="mae", set="toy-3u",
                                     value=0.5, lower=0.4, upper=0.6, n=3)
    set_ = results.set_id("toy", [7, 9])
    assert record["rows"][1]["set"] == set_ and record["rows"][1]["value"] == 1.5
    # per-user values: beside the results file, and copied to out/per_user/ by the aggregate step
    for directory in (tmp_path / "build/results", out / "per_user"):
        users = results.load_per_user(directory)
        assert users[["notebook", "metric", "set", "user", "value"]].values.tolist() == [
            ["01_ok", "rmse", set_, 7, 1.0], ["01_ok", "rmse", set_, 9, 2.0]]
    assert (out / "per_user" / "01_ok.csv.gz").exists()
    assert summary["rows"][0]["notebook"] == "01_ok"
    assert summary.pop("out_dir") == str(out.resolve())
    assert json.loads((out / "results.json").read_text()) == summary
    markdown = (out / "results.md").read_text()
    assert "| mae | user | m | 0.5 | [0.4, 0.6] | 3 | toy-3u | 01_ok |" in markdown
    assert f"| mae | lower | {metric_registry.get('mae').description} |" in markdown  # the legend
    assert "| notebook | size | seconds | peak MB | device | LM dtype | CPU |" in markdown
    assert (f"| 01_ok | default | {run._fmt(record['seconds'])} | {run._fmt(record['peak_mb'])} | {record['device']} "
            f"| {record['lm_dtype']} | {record['cpu']} |") in markdown
    # --inplace: outputs are in the source notebook, without papermill's injected cell
    nb = nbformat.read(notebooks / "01_ok.ipynb", as_version=4)
    assert not any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells)
    assert nb.cells[1].source == "RUN_SIZE = None"
    assert nb.cells[-1].outputs[0]["text"].strip() == "default"


def test_runner_names_the_failing_notebook_and_cell(notebooks, tmp_path):
    _notebook(notebooks / "03_bad.ipynb", "x = 1", "raise RuntimeError('boom')")
    with pytest.raises(run.NotebookFailed, match=r"03_bad failed in cell .*RuntimeError: boom"):
        run.run("smoke", build_dir=tmp_path / "build", out_dir=tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "results.json").exists()


def test_non_default_sizes_never_write_over_committed_figures(monkeypatch, tmp_path):
    monkeypatch.delenv("P13N_FIGURES_DIR", raising=False)
    monkeypatch.setattr(config, "BUILD_DIR", tmp_path / "build")
    monkeypatch.setattr(config, "REPO_ROOT", tmp_path)
    build, out = run.output_dirs("smoke")
    assert (build, out) == (tmp_path / "build" / "smoke", tmp_path / "build" / "smoke" / "figures")
    build, out = run.output_dirs("default")
    assert (build, out) == (tmp_path / "build", tmp_path / "figures")
    monkeypatch.chdir(tmp_path)
    assert run.output_dirs("full", "b", "o") == (tmp_path / "b", tmp_path / "o")


def test_peak_memory_sees_a_child_process_allocate():
    code = "b = bytearray(150 * 2**20); import time; time.sleep(1.0)"
    with run.PeakMemory(interval=0.05) as memory:
        subprocess.run([sys.executable, "-c", code], check=True)
    assert 150 <= memory.peak_mb < 400
    with run.PeakMemory(interval=0.05) as idle:
        time.sleep(0.2)
    assert idle.peak_mb < 150  # no child: nothing (pytest's own memory is not counted)


CPUINFO = """processor\t: 0
model name\t: AMD EPYC 9R14
flags\t\t: fpu sse avx512f avx512_bf16 amx_tile
processor\t: 1
model name\t: AMD EPYC 9R14
flags\t\t: fpu sse avx512f avx512_bf16 amx_tile
"""


def test_cpu_name_says_whether_bfloat16_is_native():
    assert run.cpu_name(CPUINFO) == "AMD EPYC 9R14 (AVX512-BF16)"
    assert run.cpu_name(CPUINFO.replace("avx512_bf16", "avx2")) == "AMD EPYC 9R14 (no native bf16)"
    assert run.hardware("cpu")["lm_dtype"] in ("bfloat16", "float32")
