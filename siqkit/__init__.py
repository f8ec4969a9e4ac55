"""siqkit: distil chain-of-thought from large (vision-)language teachers into small students."""

__version__ = "0.1.0"

STAGES = ("seeds", "generate", "annotate", "curate", "train", "eval", "export")
"""Pipeline stages in run order; names used by ``siqkit run --only/--from``."""
