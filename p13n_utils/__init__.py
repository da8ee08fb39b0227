"""p13n_utils: the small shared package behind the p13n notebooks.

One module per concern: config (paths, run sizes, device, seeds), data (manifest, checksummed
cache, loaders), splits, profiles (the four kinds of user data), synthetic (test data), models,
generation, tasks (the direct tasks' shared evaluation), prompts, user_context, retrieval,
personas, training (the engine every trainer shares), adapters (the adapter lifecycle), finetune,
alignment, recsys, recsys_classic (EASE, item-kNN, SAR, BPR with uniform negatives), torch_als,
recsys_llm, own_user and own_user_app (notebook 12: a learner's own round through the ladder, and
its page), metrics, metric_registry (one meaning per metric name), text_metrics, judge and
tagging (notebook 09's evaluation sections), evaluation (09's analysis of the recorded rows: the
ladder, Holm/BH, matched controls, seed spread), coldstart, fairness, membership and dp and
privacy (notebook 10's labs: membership inference, DP-SGD), drift, memory (fits or falls back on a
small machine), plotting, results (the results contract: rows,
evaluation-set ids, per-user values), lesson, exercises, run (the
papermill runner), taxonomy.
"""

__version__ = "0.1.0"

import os as _os

# OpenMP threads spin-wait by default; when another process competes for a small CPU's cores
# that made generation ~10x slower here. Passive waiting costs nothing on an idle machine.
# Set before torch is first imported (every notebook imports p13n_utils first).
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import warnings as _warnings

# tqdm.auto warns once per kernel that ipywidgets is missing and falls back to text bars,
# which is what we want in papermill runs; keep the warning out of committed outputs.
_warnings.filterwarnings("ignore", message=".*IProgress not found.*")
