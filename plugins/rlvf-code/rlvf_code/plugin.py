"""Entry point of the `rlvf` plugin group: registers the `code` reward and the code rows' exploit families."""

from rlvf.api import hookimpl
from rlvf_code.audit import register_families
from rlvf_code.reward import CodeReward


@hookimpl
def register_rewards(register):
    register(CodeReward, name="code",
             description="fraction of tests the extracted program passes, run in the sandbox")


@hookimpl
def register_exploits(register):
    register_families(register)
