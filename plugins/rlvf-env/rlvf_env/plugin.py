"""rlvf plugin entry point (`[project.entry-points.rlvf] env = "rlvf_env.plugin"`)."""

from rlvf.api import hookimpl
from rlvf_env.feedback import FeedbackEnvironment
from rlvf_env.python_tool import PythonToolEnvironment


@hookimpl
def register_environments(register):
    register(PythonToolEnvironment())
    register(FeedbackEnvironment())
