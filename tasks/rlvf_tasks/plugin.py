from rlvf import hookimpl
from rlvf_tasks.math_tasks import ArithmeticTask


@hookimpl
def register_tasks(register):
    register(ArithmeticTask())
