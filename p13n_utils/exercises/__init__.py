"""The checks of the notebooks' exercises, one module per notebook (``nb05`` for 05_user_rag).

Each module holds ``check_<n>(...)`` functions that take what the learner computed and call
:func:`p13n_utils.lesson.check`: a right answer prints a tick, a wrong one raises with a hint.
Reference solutions live in ``notebooks/solutions/`` and CI runs them in the smoke size.
"""
