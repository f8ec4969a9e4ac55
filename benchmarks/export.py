"""GGUF export time against the disk floor, and llama.cpp CPU generation against transformers.

Builds a random twin (qwen3 by default, hidden 1024, 8 layers: about 0.1 B parameters),
then measures:

1. **export time** of ``write_gguf`` (f16) and of llama.cpp's q4_k_m quantizer, against
   writing the same model as merged safetensors with ``save_pretrained`` (the disk floor:
   any export has to write at least that many bytes);
2. **greedy decoding speed** on the CPU of the q4_k_m GGUF in llama-cpp-python (and of the f16
   GGUF), against transformers (fp32, KV cache) on the same model and the same threads.

    python benchmarks/export.py                     # about a minute on 2 idle cores
    python benchmarks/export.py --hidden 2048 --layers 16 --tokens 128 --threads 8

Prints one Markdown table row per measurement, ready for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def build_twin(out_dir: Path, arch: str, hidden: int, layers: int) -> Path:
    """A random ``arch`` twin with 64-wide heads, 2 query heads per KV head, 3x wide MLP."""
    from siqkit.models.twins import make_tiny

    heads = max(2, hidden // 64)
    return make_tiny(arch, out_dir, hidden=hidden, layers=layers, heads=heads, kv_heads=max(1, heads // 2),
                     intermediate=hidden * 3, vocab_size=4096)


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.glob("*.safetensors"))


def disk_floor(hf_dir: Path, out_dir: Path) -> float:
    """Seconds to write the loaded model as safetensors (what a merge writes)."""
    import torch

    from siqkit.models.twins import load_tiny

    model = load_tiny(hf_dir, dtype=torch.float16)
    t0 = time.perf_counter()
    model.save_pretrained(out_dir)
    os.sync()
    return time.perf_counter() - t0


def llama_cpp_speed(path: Path, prompt: list[int], tokens: int, threads: int) -> float:
    """Greedy decode tokens/s in llama-cpp-python, prompt evaluation excluded."""
    import numpy as np

    from siqkit.export.runtime import open_llama

    llm = open_llama(path, n_ctx=len(prompt) + tokens + 8, n_threads=threads, logits_all=False)
    try:
        llm.eval(prompt)
        t0 = time.perf_counter()
        for _ in range(tokens):
            llm.eval([int(np.argmax(llm.scores[llm.n_tokens - 1]))])
        return tokens / (time.perf_counter() - t0)
    finally:
        llm.close()


def transformers_speed(hf_dir: Path, prompt: list[int], tokens: int, threads: int) -> float:
    """Greedy decode tokens/s with transformers' generate (fp32, KV cache), prefill excluded."""
    import torch

    from siqkit.models.twins import load_tiny

    torch.set_num_threads(threads)
    model = load_tiny(hf_dir).eval()
    ids = torch.tensor([prompt])

    def run(n: int) -> float:
        t0 = time.perf_counter()
        with torch.no_grad():
            model.generate(ids, max_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0)
        return time.perf_counter() - t0

    run(2)  # warm-up
    prefill = run(1)
    return (tokens - 1) / max(run(tokens) - prefill, 1e-9)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="qwen3")
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=64, help="greedy tokens to decode per runtime")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quant", default="q4_k_m")
    args = ap.parse_args(argv)

    from siqkit.export import quantize_gguf, write_gguf

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        hf = build_twin(root / "hf", args.arch, args.hidden, args.layers)
        floor = disk_floor(hf, root / "merged")
        size = dir_bytes(root / "merged")

        t0 = time.perf_counter()
        f16 = write_gguf(hf, root / "m.f16.gguf", "f16")
        os.sync()
        t_f16 = time.perf_counter() - t0
        t0 = time.perf_counter()
        quant = quantize_gguf(f16, root / f"m.{args.quant}.gguf", args.quant, nthread=args.threads)
        os.sync()
        t_q = time.perf_counter() - t0

        prompt = list(range(300, 316))
        cpp_q = llama_cpp_speed(quant, prompt, args.tokens, args.threads)
        cpp_f16 = llama_cpp_speed(f16, prompt, args.tokens, args.threads)
        hf_speed = transformers_speed(hf, prompt, args.tokens, args.threads)

    params = size / 2 / 1e6  # f16 bytes -> parameters
    model = f"{args.arch} twin, hidden {args.hidden}, {args.layers} layers ({params:,.0f} M params)"
    cmd = (f"`python benchmarks/export.py --hidden {args.hidden} --layers {args.layers} --tokens {args.tokens} "
           f"--threads {args.threads}`")
    print("| command | model | safetensors f16 (disk floor) | write_gguf f16 | ratio | quantize "
          f"{args.quant} | f16 size |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {cmd} | {model} | {floor:.2f} s | {t_f16:.2f} s | {t_f16 / floor:.1f}x | {t_q:.2f} s | "
          f"{size / 2**20:,.0f} MiB |")
    print()
    print(f"| command | model | transformers fp32 | llama.cpp f16 | llama.cpp {args.quant} | {args.quant} vs "
          "transformers |")
    print("|---|---|---|---|---|---|")
    print(f"| {cmd} | {model} | {hf_speed:.1f} tok/s | {cpp_f16:.1f} tok/s | {cpp_q:.1f} tok/s | "
          f"**{cpp_q / hf_speed:.1f}x** |")


if __name__ == "__main__":
    main()
