"""The ``siqkit`` command line: run, check and inspect recipes and run folders.

Errors meant for the user (bad recipe, store in use, malformed row under --strict)
print one line, ``error: ...``, and exit with the error's code: 2 for recipe and
usage errors, 1 otherwise.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from siqkit import STAGES, __version__
from siqkit.errors import SiqkitError
from siqkit.progress import console, out

app = typer.Typer(
    name="siqkit",
    help="Distil chain-of-thought from large (vision-)language teachers into small students, on one node.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

SetOpt = typer.Option(
    None, "--set", metavar="KEY=VALUE",
    help="Override a recipe key, e.g. --set seeds.sources[0].max=100 (repeatable; value parsed as YAML).",
)


def _version(value: bool) -> None:
    if value:
        print(f"siqkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """siqkit: seeds -> generate -> annotate -> curate -> train -> eval -> export."""


@app.command()
def run(
    recipe: Path = typer.Argument(..., help="The recipe YAML file."),
    only: Optional[str] = typer.Option(None, "--only", metavar="STAGE", help=f"Run one stage: {', '.join(STAGES)}."),
    start: Optional[str] = typer.Option(None, "--from", metavar="STAGE", help="Run from this stage to the end."),
    overrides: Optional[list[str]] = SetOpt,
    strict: bool = typer.Option(False, "--strict", help="Stop at the first malformed input row instead of quarantining it."),
    tiny: bool = typer.Option(False, "--tiny", help="Smoke test: every model a tiny twin of its class, every source capped; runs in runs/<name>-tiny."),
    no_report: bool = typer.Option(False, "--no-report", help="Do not write RUN_DIR/report.html at the end of the run."),
) -> None:
    """Run a recipe (all stages, or --only / --from one) in its run folder, then summarise it.

    A run that goes to the end of the pipeline (all stages, --from, or --only export) then
    writes the HTML report to RUN_DIR/report.html, as `siqkit report` would, and prints where;
    --only of an earlier stage does not (run `siqkit report RUN_DIR` for that).
    """
    from siqkit.recipe import load_recipe

    rec = load_recipe(recipe, overrides, tiny=tiny)  # before the heavy imports: a bad recipe answers at once
    from siqkit.runner import run_recipe, select_stages

    stages = select_stages(only, start)  # refuse a bad stage name before the run folder is touched
    from siqkit.inspect import print_summary, summarize

    run_dir = run_recipe(rec, only=only, start=start, strict=strict, command=" ".join(["siqkit", *sys.argv[1:]]))
    print_summary(summarize(run_dir))
    console.print(f"[green]done[/green]: {run_dir}  (again any time: siqkit inspect {run_dir})")
    if not no_report and stages[-1] == STAGES[-1]:
        _write_report(run_dir)


def _write_report(run_dir: Path) -> None:
    """The report at the end of a run; if it fails, the stored run is untouched and the command says so."""
    from siqkit.report.build import build_report

    try:
        path = build_report(run_dir)
    except Exception as e:  # noqa: BLE001 -- the run is stored; say what failed and how to retry
        raise SiqkitError(f"the run finished and is stored in {run_dir}, but its report failed "
                          f"({type(e).__name__}: {e}); retry with: siqkit report {run_dir}") from e
    console.print(f"[green]report[/green]: {escape(str(path))}", highlight=False, soft_wrap=True)


@app.command()
def check(
    recipe: Path = typer.Argument(..., help="The recipe YAML file."),
    overrides: Optional[list[str]] = SetOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
    tiny: bool = typer.Option(False, "--tiny", help="Check the recipe as `run --tiny` would run it."),
) -> None:
    """Validate a recipe and print the plan: stages, models, data sources and their sizes."""
    from siqkit.recipe import load_recipe

    rec = load_recipe(recipe, overrides, tiny=tiny)  # before the heavy imports: a bad recipe answers at once
    from siqkit.runner import plan

    p = plan(rec)
    if as_json:
        print(json.dumps(p, indent=2))
        return

    out.print(f"[green]recipe OK[/green]: {p['recipe']} -> run folder {p['run_dir']} (seed {p['seed']})")
    t = Table(title="stages")
    for col in ("stage", "status", "detail"):
        t.add_column(col)
    for s in p["stages"]:
        style = "green" if s["status"] == "will run" else "dim"
        t.add_row(s["stage"], f"[{style}]{s['status']}[/{style}]", s["detail"])
    out.print(t)
    t = Table(title="seed sources" + (f" (max_total {p['max_total']})" if p["max_total"] else ""))
    for col in ("name", "type", "path", "rows", "size", "splits", "max/split", "weight"):
        t.add_column(col, justify="right" if col in ("rows", "size", "weight") else "left")
    for s in p["sources"]:
        t.add_row(s["name"], s["type"], s["path"], _num(s["rows"]), _bytes(s["size_bytes"]),
                  ", ".join(s["splits"] or []) or "-", _num(s["max"]), f"{s['weight']:g}")
    out.print(t)
    if p["models"]:
        t = Table(title="models")
        for col in ("role", "name", "backend", "model", "samples"):
            t.add_column(col)
        for m in p["models"]:
            t.add_row(m["role"], m["name"], m["backend"], m["model"], str(m["samples"]))
        out.print(t)
    for line in p["warnings"]:
        out.print(f"[yellow]warning[/yellow]: {escape(line)}", highlight=False, soft_wrap=True)


@app.command()
def inspect(
    run_dir: Path = typer.Argument(..., help="A run folder (runs/<name>)."),
    as_json: bool = typer.Option(False, "--json", help="Print everything as JSON."),
    trace_key: Optional[str] = typer.Option(None, "--trace", metavar="KEY",
                                            help="Show every record of one trace (its generation key or a "
                                                 "unique prefix): seed, generation, annotation, curation."),
) -> None:
    """Show what a run folder holds: per-stage counts, seeds by source and split, quarantine and drop reasons."""
    from siqkit.inspect import print_summary, print_trace, summarize, trace

    if trace_key is not None:
        records = trace(run_dir, trace_key)
        if as_json:
            print(json.dumps(records, indent=2, default=str, ensure_ascii=False))
        else:
            print_trace(records)
        return
    s = summarize(run_dir)
    if as_json:
        print(json.dumps(s, indent=2))
        return
    print_summary(s)


@app.command()
def upgrade(run_dir: Path = typer.Argument(..., help="A run folder (runs/<name>).")) -> None:
    """Upgrade a run folder's store, written by an older siqkit, to this version's schema, in place."""
    from siqkit.store import SCHEMA_VERSION, STORE_FILE, RunLock, Store

    lock = RunLock(run_dir)
    if not (run_dir / STORE_FILE).is_file():
        Store.open(run_dir)  # the one-line error for a folder without a store
    lock.acquire("siqkit upgrade")
    try:
        Store.open(run_dir).close()
    finally:
        lock.release()
    console.print(f"{run_dir}: run store at schema version {SCHEMA_VERSION}")


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="A run folder (runs/<name>)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Where to write the HTML (default RUN_DIR/report.html)."),
) -> None:
    """Write one self-contained HTML report of a run: counts, distributions, plots and examples."""
    from siqkit.report.build import build_report

    path = build_report(run_dir, out)
    console.print(f"[green]report[/green]: {path}")


@app.command("dedup")
def dedup_cmd(
    input_file: Path = typer.Argument(..., metavar="INPUT", help="A JSONL (.jsonl) or Parquet (.parquet) file."),
    output: Optional[Path] = typer.Option(None, "--out", help="Where to write the kept rows (.jsonl or .parquet)."),
    column: str = typer.Option(..., "--column", help="The text column to compare rows by."),
    threshold: float = typer.Option(0.8, "--threshold", help="Jaccard of word n-gram sets at or above which rows are duplicates."),
    num_perm: int = typer.Option(128, "--num-perm", help="MinHash permutations."),
    ngram: int = typer.Option(5, "--ngram", help="Words per shingle."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only print the similarity histogram and what each threshold would remove."),
    as_json: bool = typer.Option(False, "--json", help="Print the counts, histogram and threshold table as JSON."),
) -> None:
    """Remove exact and near-duplicate rows of a JSONL or Parquet file by one text column."""
    from siqkit.curate.commands import dedup_command

    counts = dedup_command(input_file, output, column, threshold, num_perm, ngram, dry_run,
                           echo=(lambda _: None) if as_json else print)
    if as_json:
        print(json.dumps(counts, indent=2))


@app.command("subset")
def subset_cmd(
    run_dir: Path = typer.Argument(..., help="A run folder whose curate stage has run."),
    output: Path = typer.Option(..., "--out", help="Folder for the subset: data.jsonl, data.parquet, llamafactory.jsonl, images/, README.md."),
    difficulty: Optional[list[str]] = typer.Option(None, "--difficulty", help="easy, medium or hard (repeatable)."),
    label: Optional[list[str]] = typer.Option(None, "--label", help="Samples with any of these task labels (repeatable)."),
    teacher: Optional[list[str]] = typer.Option(None, "--teacher", help="Samples from these teachers (repeatable)."),
    split: Optional[list[str]] = typer.Option(None, "--split", help="Samples of these seed splits (repeatable)."),
    max_samples: Optional[int] = typer.Option(None, "--max", help="At most N samples, in selection order (rare labels first)."),
) -> None:
    """Export a filtered view of a run's curated samples in the training format."""
    from siqkit.curate.commands import subset_command

    subset_command(run_dir, output, difficulty, label, teacher, split, max_samples, echo=print)


@app.command("plan-memory")
def plan_memory_cmd(
    model: Path = typer.Option(..., "--model", help="A model folder (config.json is enough; a tiny twin works)."),
    vram: str = typer.Option(..., "--vram", help="The GPU memory budget, e.g. 8GB or 24GiB."),
    seq: int = typer.Option(2048, "--seq", help="Training sequence length in tokens."),
    batch_size: int = typer.Option(16, "--batch-size", help="Effective batch size (micro-batch x accumulation)."),
    lora_r: int = typer.Option(16, "--lora-r", help="LoRA rank."),
    data: Optional[Path] = typer.Option(None, "--data", help="A curated traces folder (data.jsonl): count its images in tokens."),
    max_image_pixels: Optional[int] = typer.Option(None, "--max-image-pixels", help="Scale larger images down to this many pixels (train.max_image_pixels)."),
    loss: str = typer.Option("auto", "--loss", help="auto or chunked (no full logits), or plain (train.loss)."),
) -> None:
    """Choose quantisation, micro-batch, accumulation and checkpointing to fit a GPU; print the estimate."""
    from siqkit.train.memory import plan_memory_command

    plan = plan_memory_command(model, vram, seq, batch_size=batch_size, lora_r=lora_r, data=data,
                               max_image_pixels=max_image_pixels, loss=loss, console=out)
    if not plan.fits:
        raise typer.Exit(1)


@app.command("export")
def export_cmd(
    model_dir: Path = typer.Argument(..., help="A Hugging Face model folder: a merged student or any supported checkpoint."),
    out: Path = typer.Option(..., "--out", help="The GGUF file to write, e.g. student.q4_k_m.gguf (an f16 copy lands beside it)."),
    quant: str = typer.Option("q4_k_m", "--quant", help="f16, bf16, f32, q8_0, q4_k_m, q5_k_m or q6_k."),
    mmproj: Optional[Path] = typer.Option(None, "--mmproj", help="Also write the vision tower here (Qwen2-VL, Qwen2.5-VL, Qwen3-VL); always f16."),
    no_verify: bool = typer.Option(False, "--no-verify", help="Skip the llama-cpp-python vs transformers check."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Export a model folder to GGUF, quantize it, and check it against the Hugging Face model."""
    from siqkit.export.commands import export_command

    result = export_command(model_dir, out, quant, mmproj, verify=not no_verify, as_json=as_json)
    if not result["passed"]:
        raise typer.Exit(1)


@app.command("verify-gguf")
def verify_gguf_cmd(
    file: Path = typer.Argument(..., help="The GGUF file to check."),
    hf: Path = typer.Option(..., "--hf", help="The Hugging Face model folder it was exported from."),
    mmproj: Optional[Path] = typer.Option(None, "--mmproj", help="Also check image prompts with this mmproj."),
    prompts: Optional[list[str]] = typer.Option(None, "--prompt", help="A prompt to compare on (repeatable; default: built-in ones)."),
    tokens: int = typer.Option(32, "--tokens", help="Greedy tokens to compare per prompt."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Run the same prompts (and images) through llama-cpp-python and transformers; report agreement."""
    from siqkit.export.commands import verify_command

    summary = verify_command(file, hf, mmproj, prompts=prompts, n_greedy=tokens, as_json=as_json)
    if not summary["passed"]:
        raise typer.Exit(1)


@app.command("merge")
def merge_cmd(
    base: Path = typer.Argument(..., help="The full-precision base checkpoint (not the 4-bit one)."),
    adapter: Path = typer.Argument(..., help="The LoRA adapter folder (adapter_config.json)."),
    out: Path = typer.Option(..., "--out", help="Folder for the merged checkpoint."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="float32, bfloat16 or float16 (default: the base's)."),
) -> None:
    """Merge a LoRA adapter into its full-precision base, shard by shard."""
    from siqkit.export.commands import merge_command

    merge_command(base, adapter, out, dtype=dtype)


def _num(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def _bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return str(n)


def main() -> None:
    """Console entry point: turn siqkit errors into one line and an exit code."""
    try:
        code = app(standalone_mode=False, prog_name="siqkit")  # without standalone mode, typer.Exit(n) comes back as n
        if isinstance(code, int) and code:
            sys.exit(code)
    except SiqkitError as e:
        console.print(f"[red]error[/red]: {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]; finished work is kept, rerun the same command to resume")
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        sys.exit(1)
    except _click_errors() as e:  # usage errors: one line, the usage hint, click's exit code (2)
        console.print(f"[red]error[/red]: {escape(e.format_message())}", highlight=False, soft_wrap=True)
        ctx = getattr(e, "ctx", None)
        if ctx is not None:
            console.print(f"{escape(ctx.get_usage())}  ({ctx.command_path} -h for help)", highlight=False)
        sys.exit(e.exit_code)
    except Exception as e:  # a run store that fails under any command (damaged, full disk): one line
        duckdb = sys.modules.get("duckdb")
        if duckdb is None or not isinstance(e, duckdb.Error):
            raise
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        console.print(f"[red]error[/red]: the run store failed: {escape(first)}; if it is damaged, move its "
                      "store.duckdb away and rerun the recipe", highlight=False, soft_wrap=True)
        sys.exit(1)


def _click_errors() -> tuple[type[BaseException], ...]:
    """Click's exception class, from click and from the copy typer vendors (typer._click, 0.2x)."""
    import importlib

    classes = []
    for module in ("typer._click", "click"):
        try:
            classes.append(importlib.import_module(module).ClickException)
        except (ImportError, AttributeError):
            pass
    return tuple(classes)
