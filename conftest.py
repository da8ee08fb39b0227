"""Test-wide settings (a root conftest, so they cover tests/ and the nbval run over notebooks/):
every notebook the tests execute runs in the smoke size and writes its figures to a temporary
folder, never over figures/."""

import os
import tempfile

os.environ.setdefault("P13N_RUN_SIZE", "smoke")
os.environ.setdefault("P13N_FIGURES_DIR", tempfile.mkdtemp(prefix="p13n-test-figures-"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
