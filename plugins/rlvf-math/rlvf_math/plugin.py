"""rlvf plugin entry point (`[project.entry-points.rlvf] math = "rlvf_math.plugin"`)."""

from rlvf.api import hookimpl
from rlvf_math.reward import MathReward


@hookimpl
def register_rewards(register):
    register(MathReward, name="math",
             description="1.0 if the final answer is mathematically equivalent to the `answer` column")
