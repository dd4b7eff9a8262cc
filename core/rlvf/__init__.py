"""rlvf: reinforcement learning for language models with rewards that come as plugins.

Plugins import only `hookimpl` from here; everything else lives in submodules so that importing
`rlvf` stays cheap (no torch) for reward workers and the CLI.
"""

from rlvf.api.hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["__version__", "hookimpl"]
