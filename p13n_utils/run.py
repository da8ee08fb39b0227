"""The papermill runner: execute the notebook series and collect its results.

    python -m p13n_utils.run [--size S] [--only NAME ...] [--inplace]

For each notebook (in name order) it injects ``RUN_SIZE``, executes it with papermill (kernel
``python3``), writes the executed copy to ``build/notebooks/`` and the notebook's rows to
``build/results/<notebook>.json`` (``notebook, size, seconds, peak_mb, device, lm_dtype, cpu,
rows``: ``peak_mb`` is the kernel's peak resident memory, children included, sampled by
:class:`PeakMemory`; ``lm_dtype`` and ``cpu`` say what the LM ran in and on, see
:func:`hardware`). At the end it
aggregates every results file into ``figures/results.json`` and ``figures/results.md``. It stops
at the first failure, naming the notebook and the failing cell. ``--inplace`` (default size
only) copies each executed notebook back over ``notebooks/`` so the committed outputs are current.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time
from functools import lru_cache
from pathlib import Path

from . import config, metric_registry
from .results import read_rows, read_user_values, write_user_values


# What results.json and results.md say about each notebook's run.
RUN_FIELDS = ("notebook", "size", "seconds", "peak_mb", "device", "lm_dtype", "cpu")


class NotebookFailed(RuntimeError):
    """A notebook raised; the message names the notebook and the failing cell."""


def available_notebooks(notebooks_dir: Path | None = None) -> list[str]:
    """Names (without ``.ipynb``) of the notebooks in the series, in execution order."""
    notebooks_dir = Path(notebooks_dir or config.NOTEBOOKS_DIR)
    return sorted(p.stem for p in notebooks_dir.glob("[0-9][0-9]_*.ipynb"))


def select_notebooks(only: list[str] | None, notebooks_dir: Path | None = None) -> list[str]:
    """The notebooks to run: all of them, or those named in ``only`` (a name may omit the
    ``.ipynb`` suffix or be just its two-digit number). Unknown names raise a ValueError
    listing the valid ones."""
    names = available_notebooks(notebooks_dir)
    if not only:
        return names
    chosen = []
    for raw in only:
        key = Path(raw).stem
        match = [n for n in names if n == key or n.split("_")[0] == key]
        if not match:
            raise ValueError(f"unknown notebook {raw!r}; valid notebooks: {', '.join(names)}")
        chosen.extend(m for m in match if m not in chosen)
    return [n for n in names if n in chosen]


class PeakMemory:
    """Peak resident memory (MB) of this process's children — the notebook's kernel and what it
    starts — sampled every ``interval`` seconds in a background thread while the block runs::

        with PeakMemory() as mem:
            ...                      # execute a notebook
        mem.peak_mb

    Sampling misses peaks shorter than ``interval``; for a notebook that holds a model for
    seconds, 0.2 s is close enough (Binder's limit is about 2 GB)."""

    def __init__(self, interval: float = 0.2):
        self.interval = interval
        self.peak_mb = 0.0
        self._before: set[int] = set()  # children already running when the block starts: not counted
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _rss_mb(self) -> float:
        import psutil

        total = 0
        for child in psutil.Process().children(recursive=True):
            if child.pid in self._before:
                continue
            try:
                total += child.memory_info().rss
            except psutil.Error:  # exited between listing and reading
                pass
        return total / 2**20

    def _sample(self) -> None:
        while True:
            self.peak_mb = max(self.peak_mb, self._rss_mb())
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> "PeakMemory":
        import psutil

        self._before = {child.pid for child in psutil.Process().children(recursive=True)}
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def cpu_name(cpuinfo: str | None = None) -> str:
    """The CPU model (``model name`` of /proc/cpuinfo, else :func:`platform.processor`) and
    whether it computes bfloat16 natively (the ``avx512_bf16`` or ``amx_bf16`` flag), e.g.
    ``"AMD EPYC (AVX512-BF16)"``. ``cpuinfo``: the text of /proc/cpuinfo (read if not given)."""
    import platform

    try:
        info = cpuinfo if cpuinfo is not None else Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                 if line.startswith("model name")), platform.machine())
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines()
                      if line.startswith("flags")), []))
    native = [label for flag, label in (("avx512_bf16", "AVX512-BF16"), ("amx_bf16", "AMX-BF16"))
              if flag in flags]
    return f"{name} ({', '.join(native)})" if native else f"{name} (no native bf16)"


@lru_cache(maxsize=None)
def hardware(device: str) -> dict:
    """What a run ran on: ``device``, ``lm_dtype`` (the dtype ``lm.dtype = "auto"`` resolves to
    there, :func:`p13n_utils.models.auto_dtype`) and ``cpu`` (:func:`cpu_name`); for a CUDA
    device ``cpu`` also names the GPU."""
    from .models import auto_dtype

    info = {"device": device, "lm_dtype": auto_dtype(device), "cpu": cpu_name()}
    if device.startswith("cuda"):
        import torch

        info["cpu"] += f"; GPU {torch.cuda.get_device_name(device)}"
    return info


def _clean_for_commit(path: Path) -> None:
    """Drop papermill's injected-parameters cell and timing metadata, so that the committed
    notebook keeps ``RUN_SIZE = None`` (env P13N_RUN_SIZE still applies) and diffs stay small."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nb.cells = [c for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])]
    nb.metadata.pop("papermill", None)
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
    config.atomic_write(path, nbformat.writes(nb) + "\n")


def execute_notebook(name: str, size: str, build_dir: Path, progress: bool = False,
                     figures: Path | None = None) -> dict:
    """Execute one notebook and return its results record (also written to
    ``build_dir/results/<name>.json``); its figures go to ``figures`` (default: env
    ``P13N_FIGURES_DIR``, else figures/). Raises :class:`NotebookFailed` on error."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    build_dir = Path(build_dir).resolve()
    source = config.NOTEBOOKS_DIR / f"{name}.ipynb"
    executed = build_dir / "notebooks" / f"{name}.ipynb"
    rows_file = build_dir / "results" / f"{name}.jsonl"
    users_file = build_dir / "results" / f"{name}.users.jsonl"
    users_csv = build_dir / "results" / f"{name}.users.csv.gz"
    executed.parent.mkdir(parents=True, exist_ok=True)
    rows_file.parent.mkdir(parents=True, exist_ok=True)
    for stale in (rows_file, users_file, users_csv):
        stale.unlink(missing_ok=True)

    env_before = dict(os.environ)
    os.environ.update(P13N_RESULTS=str(rows_file), P13N_USER_VALUES=str(users_file), P13N_RUN_SIZE=size)
    if figures is not None:
        os.environ["P13N_FIGURES_DIR"] = str(figures)
    start = time.perf_counter()
    try:
        with PeakMemory() as memory:
            pm.execute_notebook(str(source), str(executed), parameters={"RUN_SIZE": size},
                                kernel_name="python3", progress_bar=progress, cwd=str(source.parent))
    except PapermillExecutionError as err:
        first_line = (err.source or "").strip().splitlines()[:1]
        raise NotebookFailed(
            f"notebook {name} failed in cell {err.cell_index} "
            f"(execution count {err.exec_count}): {err.ename}: {err.evalue}\n"
            f"  cell starts: {first_line[0] if first_line else ''}\n"
            f"  executed copy with the traceback: {executed}") from None
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    seconds = time.perf_counter() - start

    record = {
        "notebook": name,
        "size": size,
        "seconds": round(seconds, 1),
        "peak_mb": round(memory.peak_mb),
        **hardware(config.get_device()),
        "rows": read_rows(rows_file) if rows_file.exists() else [],
    }
    config.atomic_write(build_dir / "results" / f"{name}.json", json.dumps(record, indent=1) + "\n")
    if users_file.exists():
        kept = {(r["task"], r["level"], r["method"], r["metric"], r["set"]) for r in record["rows"]}
        values = read_user_values(users_file)
        keys = list(zip(*(values[c] for c in ("task", "level", "method", "metric", "set"))))
        write_user_values(values[[k in kept for k in keys]], users_csv)
    return record


def aggregate(build_dir: Path, out_dir: Path) -> dict:
    """Collect every ``build_dir/results/*.json`` into ``out_dir/results.json`` and a readable
    ``out_dir/results.md``, and copy each ``<notebook>.users.csv.gz`` to
    ``out_dir/per_user/<notebook>.csv.gz``. Returns the aggregated object."""
    records = [json.loads(p.read_text()) for p in sorted((build_dir / "results").glob("*.json"))]
    summary = {
        "notebooks": [{k: r.get(k) for k in RUN_FIELDS} for r in records],
        "rows": [{"notebook": r["notebook"], **row} for r in records for row in r["rows"]],
    }
    config.atomic_write(out_dir / "results.json", json.dumps(summary, indent=1) + "\n")
    config.atomic_write(out_dir / "results.md", render_markdown(summary))
    per_user = out_dir / "per_user"
    for path in sorted((build_dir / "results").glob("*.users.csv.gz")):
        per_user.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, per_user / path.name.replace(".users.csv.gz", ".csv.gz"))
    return summary


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


RUN_HEADERS = ("notebook", "size", "seconds", "peak MB", "device", "LM dtype", "CPU")


def render_markdown(summary: dict) -> str:
    """The aggregated results as markdown: run times, one table per task (with each row's
    evaluation set), then a legend with every metric's direction and description."""
    lines = ["# Results", "", "Written by `python -m p13n_utils.run`; 95% bootstrap intervals "
             "over users in brackets. `seconds` is the wall time of the notebook's last run: LM "
             "outputs are memoised under build/cache, so a rerun is much faster than a first run "
             "(first-run times are quoted in each notebook). `peak MB` is the kernel's peak resident "
             "memory (Binder gives about 2 GB); `LM dtype` is what the LM of 02-05 ran in on that "
             "hardware. `set` names the evaluation set (which users, `<task>-<n>u-<hash>`): compare two "
             "rows only when their sets are equal.", "", "| " + " | ".join(RUN_HEADERS) + " |",
             "|---" * len(RUN_HEADERS) + "|"]
    lines += ["| " + " | ".join(_fmt(n.get(k)) for k in RUN_FIELDS) + " |" for n in summary["notebooks"]]
    tasks = sorted({row["task"] for row in summary["rows"]})
    level_order = {"global": 0, "persona": 1, "user": 2}
    for task in tasks:
        rows = [r for r in summary["rows"] if r["task"] == task]
        rows.sort(key=lambda r: (r["metric"], level_order[r["level"]], r["method"]))
        lines += ["", f"## {task}", "", "| metric | level | method | value | 95% CI | n | set | notebook |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            ci = f"[{_fmt(r['lower'])}, {_fmt(r['upper'])}]" if r["lower"] is not None else ""
            lines.append(f"| {r['metric']} | {r['level']} | {r['method']} | {_fmt(r['value'])} "
                         f"| {ci} | {_fmt(r['n'])} | {r.get('set', '')} | {r['notebook']} |")
    names = sorted({metric_registry.base_name(r["metric"])[0] for r in summary["rows"]})
    derived = any(metric_registry.base_name(r["metric"])[1] for r in summary["rows"])
    if names:
        lines += ["", "## Metrics", "", "| metric | better | description |", "|---|---|---|"]
        for name in names:
            m = metric_registry.get(name)
            lines.append(f"| {name} | {m.direction} | {m.description} |")
        if derived:
            lines += ["", "`<metric>_diff_vs_<method>`: the paired difference metric(this method) - "
                      "metric(<method>) over the same users (0 = no difference); `<metric>_ratio_vs_<method>`: "
                      "the paired ratio (1 = no difference). Both keep the metric's direction."]
    return "\n".join(lines) + "\n"


def output_dirs(size: str, build_dir: Path | None = None,
                out_dir: Path | None = None) -> tuple[Path, Path]:
    """Where a run writes: ``build/`` and ``figures/`` for the default size (what
    ``make run`` commits); ``build/<size>/`` and ``build/<size>/figures/`` for another
    size, so that a smoke or full run never overwrites the committed figures and results.
    Explicit folders (or env ``P13N_FIGURES_DIR``) win. Paths are absolute: the kernels run in
    notebooks/, where a relative path would point elsewhere."""
    default = size == config.DEFAULT_SIZE
    build_dir = Path(build_dir or (config.BUILD_DIR if default else config.BUILD_DIR / size))
    if out_dir is None:
        out_dir = config.figures_dir() if default or "P13N_FIGURES_DIR" in os.environ \
            else build_dir / "figures"
    return build_dir.resolve(), Path(out_dir).resolve()


def run(size: str | None = None, only: list[str] | None = None, inplace: bool = False,
        build_dir: Path | None = None, out_dir: Path | None = None, progress: bool = True) -> dict:
    """Execute the selected notebooks in order, then aggregate. Returns the summary."""
    size = config.resolve_size(size)
    if inplace and size != config.DEFAULT_SIZE:
        raise ValueError(f"--inplace refreshes the committed notebooks, which carry outputs of the "
                         f"{config.DEFAULT_SIZE!r} size; got size {size!r}")
    names = select_notebooks(only)
    if not names:
        raise ValueError(f"no notebooks found in {config.NOTEBOOKS_DIR}")
    build_dir, out_dir = output_dirs(size, build_dir, out_dir)

    from tqdm.auto import tqdm

    bar = tqdm(names, desc=f"notebooks ({size})", unit="nb", disable=not progress)
    for name in bar:
        bar.set_postfix_str(name)
        record = execute_notebook(name, size, build_dir, figures=out_dir)
        tqdm.write(f"{name}: {record['seconds']:.1f} s, {len(record['rows'])} result rows")
        if inplace:
            executed = build_dir / "notebooks" / f"{name}.ipynb"
            target = config.NOTEBOOKS_DIR / f"{name}.ipynb"
            tmp = target.with_suffix(".ipynb.tmp")
            shutil.copyfile(executed, tmp)
            _clean_for_commit(tmp)
            os.replace(tmp, target)
    return {**aggregate(build_dir, out_dir), "out_dir": str(out_dir)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m p13n_utils.run", description=__doc__.split("\n")[0])
    parser.add_argument("--size", default=None,
                        help=f"one of {', '.join(config.SIZE_NAMES)} (default: env P13N_RUN_SIZE or default)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these notebooks")
    parser.add_argument("--inplace", action="store_true",
                        help="refresh the committed notebooks with their executed outputs")
    parser.add_argument("--build-dir", type=Path, default=None,
                        help="default: build/ (build/<size>/ for a non-default size)")
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="where figures and results.json/.md go (default: figures/ for the "
                             "default size, else <build-dir>/figures/)")
    args = parser.parse_args(argv)
    try:
        summary = run(args.size, args.only, args.inplace, args.build_dir, args.out_dir)
    except (ValueError, NotebookFailed) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2 if isinstance(err, ValueError) else 1
    print(f"{len(summary['rows'])} result rows from {len(summary['notebooks'])} notebooks "
          f"-> {summary['out_dir']}/results.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
