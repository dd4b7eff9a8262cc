"""rlvf-sandbox: run untrusted programs locally, contained and fast (bubblewrap + a pre-forked worker pool).

    from rlvf_sandbox import Sandbox
    with Sandbox(timeout=5, memory="512M") as sandbox:
        result = sandbox.run("print(input()[::-1])", stdin="abc")
        result.stdout  # b"cba\\n"

Torch-free and independent of `rlvf`: a reward-worker machine installs only this.
"""

from rlvf_sandbox.function_tests import (
    FunctionTestReport,
    FunctionTests,
    function_test_job,
    run_function_tests,
)
from rlvf_sandbox.sandbox import (
    RunResult,
    Sandbox,
    SandboxError,
    SandboxUnavailable,
    UnisolatedWarning,
    parse_size,
)

__version__ = "0.1.0"
__all__ = [
    "FunctionTestReport",
    "FunctionTests",
    "RunResult",
    "Sandbox",
    "SandboxError",
    "SandboxUnavailable",
    "UnisolatedWarning",
    "__version__",
    "function_test_job",
    "parse_size",
    "run_function_tests",
]
