"""Recipes: the YAML schema (:mod:`.schema`) and how a file becomes a validated Recipe (:mod:`.load`)."""

from siqkit.recipe.load import apply_override, format_validation_error, load_recipe, substitute_env
from siqkit.recipe.schema import (
    BACKENDS, DIGIT_OPERATIONS, FIELD_DEFAULTS, FILE_SOURCES, INTERNAL_KEYS, AnnotateConfig, Endpoint, EvalConfig, ExportConfig,
    GenerateConfig, PromptConfig, Recipe, RouteConfig, RunConfig, SamplingConfig, SeedsConfig, SourceConfig,
    TeacherConfig, TinyConfig, _Model,
)

__all__ = [
    "BACKENDS", "DIGIT_OPERATIONS", "FIELD_DEFAULTS", "FILE_SOURCES", "INTERNAL_KEYS", "AnnotateConfig",
    "Endpoint", "EvalConfig", "ExportConfig", "GenerateConfig", "PromptConfig", "Recipe", "RouteConfig", "RunConfig", "SamplingConfig",
    "SeedsConfig", "SourceConfig", "TeacherConfig", "TinyConfig", "_Model", "apply_override",
    "format_validation_error", "load_recipe", "substitute_env",
]
