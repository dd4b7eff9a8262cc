from rlvf.api import hookimpl
from rlvf_text.rewards import (
    OverlongPenalty,
    RepetitionPenalty,
    boxed,
    code_fence,
    qa_exact,
    qa_f1,
    think_format,
)


@hookimpl
def register_rewards(register):
    register(boxed)
    register(think_format)
    register(code_fence)
    register(OverlongPenalty, name="overlong")
    register(RepetitionPenalty, name="repetition")
    register(qa_f1, name="qa")
    register(qa_exact)
