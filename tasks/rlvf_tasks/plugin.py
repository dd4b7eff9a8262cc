from rlvf.api import hookimpl
from rlvf_tasks.code_tasks import CodeDatasetTask, HumanEvalTask, SimpleFunctionsTask
from rlvf_tasks.math_tasks import ArithmeticTask, ChampTask, GSM8KFormatTask, GSMSymbolicTask
from rlvf_tasks.multistep import MultistepTask


@hookimpl
def register_tasks(register):
    for task in (ArithmeticTask(), MultistepTask(), GSMSymbolicTask(), ChampTask(), GSM8KFormatTask(),
                 HumanEvalTask(), CodeDatasetTask(), SimpleFunctionsTask()):
        register(task)
