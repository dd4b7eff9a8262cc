"""rlvf-code: the `code` reward. Programs extracted from completions run against tests in rlvf-sandbox."""

from rlvf_code.extract import extract_code
from rlvf_code.reward import CodeReward

__all__ = ["CodeReward", "extract_code"]
