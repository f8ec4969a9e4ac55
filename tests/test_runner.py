"""The runner's tables cover every pipeline stage: no stage name without its function."""

from siqkit import STAGES
from siqkit.runner import STAGE_RUNNERS, STAGE_SECTIONS, select_stages


def test_every_stage_has_a_runner_and_its_sections():
    assert tuple(STAGE_RUNNERS) == STAGES
    assert tuple(STAGE_SECTIONS) == STAGES


def test_select_stages_in_pipeline_order():
    assert select_stages(None, None) == list(STAGES)
    assert select_stages("curate", None) == ["curate"]
    assert select_stages(None, "train") == ["train", "eval", "export"]
