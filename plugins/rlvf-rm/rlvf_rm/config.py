"""The config of `rlvf train-rm`: the [rm] section, and the stage's schema (the shared base, [preference], [rm]).
Torch-free, so that registering the command stays cheap."""

from __future__ import annotations

from rlvf.api import FinetuneConfig, PreferenceConfig, StageConfig


class RMConfig(FinetuneConfig):
    """`rlvf train-rm`: a Bradley-Terry reward model on [preference] pairs, from the [model] checkpoint."""

    output_dir: str = "runs/rm"
    margin: float = 0.0  # loss -log sigmoid(r+ - r- - margin)
    margin_column: str | None = None  # a per-pair margin from this column of the data (added to `margin`)


class RMStageConfig(StageConfig):
    """`rlvf train-rm`."""

    rm: RMConfig = RMConfig()
    preference: PreferenceConfig = PreferenceConfig()
