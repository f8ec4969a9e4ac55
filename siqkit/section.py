"""The base of every recipe section model (in siqkit.recipe, siqkit.train, siqkit.curate): unknown keys are refused."""

from pydantic import BaseModel, ConfigDict


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=False)
