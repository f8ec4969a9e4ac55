"""Hub-ready model cards: the YAML header the Hugging Face Hub reads, for GGUF, merged and adapter folders.

Every card siqkit writes opens with a header (``base_model``, ``base_model_relation``,
``library_name``, ``license``, ``pipeline_tag``, ``tags``), then :data:`CARD_MARK`, then the
body. Decisions where nothing says more:

- ``base_model`` is a Hub repo id only when one is known: the checkpoint path given *as* a
  repo id, or a folder in the Hugging Face cache layout (``models--owner--name/snapshots/…``).
  A local folder with no such trace is named in the body and left out of the header (the Hub
  rejects a path there). A student siqkit built from scratch has none.
- ``license`` is the base model's own card's license when its folder has a card, else
  ``unknown`` (the body says to set it before publishing).
- ``pipeline_tag`` is ``image-text-to-text`` for vision-language architectures, else
  ``text-generation``.

The GGUF card itself is written by :func:`siqkit.export.extras.write_model_card`; the merged
and adapter cards by :func:`write_folder_card`, which the export stage calls for each stage of
the train run it exports (``siqkit merge`` for its output), replacing peft's blank template.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from siqkit.archs import VISION_ARCHS

CARD_MARK = "<!-- model card written by siqkit export -->"
TAGS = ["siqkit", "distillation", "chain-of-thought", "reasoning"]
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_PEFT_TEMPLATE = "# Model Card for Model ID"


def base_model_id(path_or_id: str | Path | None) -> str | None:
    """The Hub repo id of a checkpoint when known (see the module docstring), else None."""
    if path_or_id is None:
        return None
    text = str(path_or_id)
    for part in Path(text).parts:
        if part.startswith("models--") and part.count("--") >= 2:  # huggingface_hub's cache layout
            return part.removeprefix("models--").replace("--", "/", 1)
    if _REPO_ID.match(text) and not Path(text).exists():
        return text
    return None


def base_license(folder: str | Path | None) -> str | list[str]:
    """The license in a checkpoint folder's own card header, else ``unknown``."""
    card = Path(folder) / "README.md" if folder else None
    if card is not None and card.is_file():
        header = read_header(card.read_text(errors="replace"))
        if header.get("license"):
            return header["license"]
    return "unknown"


def read_header(card: str) -> dict:
    """The YAML header of a card (empty when it has none or it does not parse)."""
    if not card.startswith("---\n"):
        return {}
    try:
        data = yaml.safe_load(card.split("---\n", 2)[1])
    except (yaml.YAMLError, IndexError):
        return {}
    return data if isinstance(data, dict) else {}


def header(*, base: str | None, relation: str, library: str, license: str | list[str], model_type: str | None,
           extra_tags: list[str] = ()) -> str:
    """The ``---`` YAML block; keys without a value are left out."""
    meta = {"base_model": base, "base_model_relation": relation if base else None, "library_name": library,
            "license": license,
            "pipeline_tag": "image-text-to-text" if model_type in VISION_ARCHS else "text-generation",
            "tags": [*TAGS, *extra_tags]}
    return "---\n" + yaml.safe_dump({k: v for k, v in meta.items() if v}, sort_keys=False) + "---\n"


def is_ours_or_template(card: Path) -> bool:
    """Whether ``card`` may be replaced: absent, written by siqkit, or peft's blank template."""
    if not card.exists():
        return True
    text = card.read_text(errors="replace")
    return CARD_MARK in text or _PEFT_TEMPLATE in text


def write_folder_card(folder: str | Path, kind: str, *, base: str | Path | None, title: str,
                      facts: dict | None = None) -> Path | None:
    """Write ``folder/README.md`` for a merged model (``kind="merged"``) or a LoRA adapter
    (``kind="adapter"``) trained from ``base`` (a repo id or folder); ``facts`` become a
    table. A card someone else wrote is left alone (returns None)."""
    folder = Path(folder)
    card = folder / "README.md"
    if not is_ours_or_template(card):
        return None
    cfg_file = folder / "config.json"
    model_type = json.loads(cfg_file.read_text()).get("model_type") if cfg_file.is_file() else None
    license = base_license(base if base and Path(str(base)).is_dir() else None)
    if kind == "adapter":
        acfg = json.loads((folder / "adapter_config.json").read_text())
        model_type = model_type or _model_type_of(base)
        head = header(base=base_model_id(base), relation="adapter", library="peft", license=license,
                      model_type=model_type, extra_tags=["lora", "peft"])
        load = ["```python", "from peft import PeftModel", f"from transformers import {_auto(model_type)}", "",
                f'base = {_auto(model_type)}.from_pretrained("{base}")',
                f'model = PeftModel.from_pretrained(base, "{folder}")', "```"]
        what = (f"A LoRA adapter (rank {acfg.get('r')}, alpha {acfg.get('lora_alpha')}) on `{base}`, "
                f"trained by siqkit.")
    else:
        head = header(base=base_model_id(base), relation="finetune", library="transformers", license=license,
                      model_type=model_type, extra_tags=["safetensors"])
        load = ["```python", f"from transformers import AutoProcessor, {_auto(model_type)}", "",
                f'model = {_auto(model_type)}.from_pretrained("{folder}")',
                f'processor = AutoProcessor.from_pretrained("{folder}")', "```"]
        what = f"A full model (safetensors) trained by siqkit from `{base}`." if base else \
            "A full model (safetensors) built and trained from scratch by siqkit."
    lines = [head.rstrip(), CARD_MARK, f"# {title}", "", what, ""]
    if facts:
        lines += ["| | |", "|---|---|", *[f"| {k} | {cell(v)} |" for k, v in facts.items()], ""]
    lines += ["## Load it", "", *load, ""]
    if license == "unknown":
        lines += ["The license is not known to siqkit: set `license` in the header before publishing.", ""]
    card.write_text("\n".join(lines), encoding="utf-8")
    return card


def cell(value) -> str:
    """A value as one Markdown table cell: numbers readable, nested values as ``key: value`` lines."""
    from siqkit.inspect import number

    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, (int, float)):
        return number(value)
    if isinstance(value, dict):
        return "<br>".join(f"{k}: {cell(v)}" for k, v in _flat(value) if v not in (None, {}, []))
    if isinstance(value, (list, tuple)):
        return ", ".join(cell(v) for v in value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def _flat(d: dict, prefix: str = "") -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    for k, v in d.items():
        out += _flat(v, f"{prefix}{k}.") if isinstance(v, dict) and v else [(f"{prefix}{k}", v)]
    return out


def _auto(model_type: str | None) -> str:
    return "AutoModelForImageTextToText" if model_type in VISION_ARCHS else "AutoModelForCausalLM"


def _model_type_of(folder) -> str | None:
    cfg = Path(str(folder)) / "config.json" if folder else None
    return json.loads(cfg.read_text()).get("model_type") if cfg is not None and cfg.is_file() else None


def write_training_cards(store, base: str | Path | None) -> list[str]:
    """Cards for the adapter and merged folders of every finished stage of the newest train run."""
    written = []
    for stage, data, method, steps, final_loss, input_model, adapter_dir, merged_dir in store.con.execute(
            """SELECT stage, data, method, steps, final_loss, input_model, adapter_dir, merged_dir FROM train_stages
               WHERE stage_run IS NOT DISTINCT FROM (SELECT max(stage_run) FROM train_stages) AND status = 'done'
               ORDER BY position""").fetchall():
        facts = {"stage": stage, "data": data, "method": method, "steps": steps, "final loss": final_loss}
        if adapter_dir and (Path(adapter_dir) / "adapter_config.json").is_file():
            card = write_folder_card(adapter_dir, "adapter", base=input_model, title=f"{stage} adapter",
                                     facts={**facts, "trained on": input_model})
            written += [str(card)] if card else []
        if merged_dir and Path(merged_dir).is_dir():
            card = write_folder_card(merged_dir, "merged", base=base, title=f"{stage} (merged)",
                                     facts={**facts, "input model": input_model})
            written += [str(card)] if card else []
    return written
