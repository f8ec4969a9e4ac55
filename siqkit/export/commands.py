"""The ``siqkit export``, ``siqkit verify-gguf`` and ``siqkit merge`` commands, as plain functions.

Each takes plain arguments, prints a rich table (or JSON) and returns the result dict; the
command line only parses options and calls them. A failed f16 check raises
:class:`~siqkit.export.verify.VerifyError` (one ``error:`` line, exit code 1).
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.table import Table

from siqkit.progress import console, out


def verify_table(summaries: list[dict], title: str = "llama-cpp-python vs transformers") -> Table:
    """One row per checked file: greedy agreement, top-1 agreement, logit error, image check."""
    t = Table(title=title)
    for col in ("file", "quant", "greedy", "top-1", "logit err", "image", "check"):
        t.add_column(col, justify="right" if col in ("greedy", "top-1", "logit err") else "left")
    for s in summaries:
        text, image = s["text"], s.get("image")
        greedy = f"{text['greedy_prefix_mean']:.0f}/{text['greedy_tokens']}"
        if text.get("greedy_excused"):
            greedy += f" ({text['greedy_excused']} tie)"
        shown_image = "-"
        if image:
            shown_image = (f"{'same' if image['next_top1'] == 1 else 'other'} {image['next_logit_err_rel']:.3f} "
                           f"{image['greedy_prefix_mean']:.0f}/{image['greedy_tokens']}")
        check = "[green]passed[/green]" if s["passed"] else "[red]FAILED[/red]"
        t.add_row(Path(s["file"]).name, s["quant"], greedy, f"{text['top1_decisive']:.3f}",
                  f"{text['logit_err_rel']:.4f}", shown_image, check)
    t.caption = ("greedy: matching tokens of the transformers continuation; top-1: agreement where the "
                 "top token is not a near-tie; logit err: max |difference| / std of transformers' logits; "
                 "image: next token after an image prompt (same/other, logit err), then greedy")
    return t


def _print_failures(summaries: list[dict]) -> None:
    for s in summaries:
        for failure in s.get("failures") or []:
            console.print(f"[yellow]{Path(s['file']).name}[/yellow]: {failure}", highlight=False)


def verify_command(
    file: str | Path,
    hf: str | Path,
    mmproj: str | Path | None = None,
    *,
    prompts: list[str] | None = None,
    n_greedy: int = 32,
    as_json: bool = False,
) -> dict:
    """``siqkit verify-gguf FILE --hf MODEL_DIR [--mmproj FILE]``: check one GGUF, print, return the summary."""
    from siqkit.export.verify import summary_path, verify_gguf

    with console.status(f"running {Path(file).name} and {Path(hf).name} side by side"):
        summary = verify_gguf(file, hf, mmproj=mmproj, prompts=prompts or None, n_greedy=n_greedy)
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        out.print(verify_table([summary]))
        _print_failures([summary])
        console.print(f"summary: {summary_path(file)}", highlight=False)
    return summary


def export_command(
    model_dir: str | Path,
    out_file: str | Path,
    quant: str = "q4_k_m",
    mmproj: str | Path | None = None,
    *,
    verify: bool = True,
    as_json: bool = False,
) -> dict:
    """``siqkit export MODEL_DIR --out FILE.gguf --quant TYPE [--mmproj FILE]``: export, check, print."""
    from siqkit.export.api import export_model

    with console.status(f"exporting {Path(model_dir).name} as {quant}"):
        result = export_model(model_dir, out_file, quant, mmproj=mmproj, verify=verify)
    from siqkit.export.mmproj import MMPROJ_ARCHS

    if mmproj is None and result["model_type"] in MMPROJ_ARCHS:
        console.print("[yellow]note[/yellow]: only the language model was exported; add --mmproj FILE for the "
                      "vision tower", highlight=False)
    if as_json:
        print(json.dumps(result, indent=2))
        return result
    t = Table(title=f"{result['name']}: {result['model_type']} -> GGUF {result['gguf_arch']}")
    for col in ("file", "type", "size", "tensor types"):
        t.add_column(col, justify="right" if col == "size" else "left")
    for f in result["files"]:
        types = ", ".join(f"{k} {v}" for k, v in f["tensor_types"].items())
        t.add_row(Path(f["path"]).name, f["quant"], f"{f['size_bytes'] / 2**20:,.1f} MiB", types)
    if result["mmproj"]:
        size = Path(result["mmproj"]).stat().st_size / 2**20
        t.add_row(Path(result["mmproj"]).name, "mmproj f16", f"{size:,.1f} MiB", "")
    out.print(t)
    summaries = [f["verify"] for f in result["files"] if f.get("verify")]
    if summaries:
        out.print(verify_table(summaries))
        _print_failures(summaries)
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in result["timings"].items())
    console.print(f"done in {result['seconds']:.1f}s ({timings}) in {Path(result['gguf']).parent}; "
                  f"Modelfile: {result.get('modelfile')}, model card: {result.get('card')}", highlight=False)
    return result


def merge_command(base: str | Path, adapter: str | Path, out_dir: str | Path, *, dtype: str | None = None) -> Path:
    """``siqkit merge BASE_DIR ADAPTER_DIR --out DIR``: merge a LoRA into its full-precision base."""
    from siqkit.export.merge import merge_lora

    with console.status(f"merging {Path(adapter).name} into {Path(base).name}"):
        path = merge_lora(base, adapter, out_dir, dtype=dtype)
    console.print(f"[green]merged[/green]: {path}  (export it: siqkit export {path} --out model.q4_k_m.gguf)",
                  highlight=False)
    return path
