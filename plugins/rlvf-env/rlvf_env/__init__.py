"""rlvf-env: multi-turn environments for rlvf (a Python tool run in rlvf-sandbox, and retry-after-feedback)."""

from rlvf_env.feedback import FeedbackEnvironment
from rlvf_env.python_tool import PythonToolEnvironment, final_code_block

__all__ = ["FeedbackEnvironment", "PythonToolEnvironment", "final_code_block"]
