"""``python -m siqkit.train CONFIG DATA_DIR OUT_DIR [--eval-seeds FILE]``: run a curriculum.

CONFIG is a YAML or JSON file with the recipe's ``student`` and ``train`` sections;
DATA_DIR the curated traces folder (``data.jsonl``); OUT_DIR where stages, checkpoints,
merged models and plots go. Rerunning the same command resumes from the last checkpoint.
``--eval-seeds`` is a JSONL file of held-out seeds (``seed_id``, ``question``, ``images``
relative to the file, ``gold``, optional ``teacher_trace`` and ``caption``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import yaml
from pydantic import ValidationError

from siqkit.errors import SiqkitError
from siqkit.section import format_validation_error


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m siqkit.train", description=__doc__.splitlines()[0])
    ap.add_argument("config", type=Path)
    ap.add_argument("data_dir", type=Path)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--eval-seeds", type=Path, default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from siqkit.train import StudentConfig, TrainConfig, train_curriculum

    try:
        raw = yaml.safe_load(args.config.read_text()) or {}
        base = args.config.parent
        student = StudentConfig.model_validate(raw.get("student") or {})
        if not student.path.is_absolute():
            student.path = (base / student.path).resolve()
        train = TrainConfig.model_validate(raw.get("train") or {})
        seeds = None
        if args.eval_seeds:
            seeds = []
            for line in args.eval_seeds.read_text().splitlines():
                if line.strip():
                    row = json.loads(line)
                    row["images"] = [args.eval_seeds.parent / p for p in row.get("images") or []]
                    seeds.append(row)
        summary = train_curriculum(student, train, args.data_dir, args.out_dir, eval_seeds=seeds)
    except ValidationError as e:
        print(f"error: {args.config}: {format_validation_error(e)}", file=sys.stderr)
        return 2
    except SiqkitError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    print(json.dumps({"final_model": summary["final_model"],
                      "stages": [{k: s.get(k) for k in ("stage", "status", "steps", "final_loss")}
                                 for s in summary["stages"]]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
