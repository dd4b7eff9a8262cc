"""Entry point of the `rlvf` plugin group: registers the `code` reward."""

from rlvf.api import hookimpl
from rlvf_code.reward import CodeReward


@hookimpl
def register_rewards(register):
    register(CodeReward, name="code",
             description="fraction of tests the extracted program passes, run in the sandbox")
