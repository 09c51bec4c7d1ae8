"""Generated tasks with checkable answers: math problems at difficulty 1..4 (`dataset.generate_problems`)
and non-reasoning examples with preference labels (`dataset.generate_general`).
Field documentation: `problem.py` (reasoning) and `general.py` (non-reasoning)."""
