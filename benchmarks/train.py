"""siqkit's training loop vs a plain ``transformers`` Trainer + peft run of the same model and data.

Builds a randomly initialised text twin (qwen3 by default, hidden 256, 4 layers) and a
traces folder whose chain-of-thought targets range from a few words to a few hundred, then
trains the same QLoRA setting (NF4 4-bit base, LoRA r=16 on every linear layer of the
language model, same micro-batch, accumulation, steps, learning rate, assistant-only
labels) twice, each side in its own process so peak memory is its own:

- **siqkit**: :func:`siqkit.train.loop.run_loop` with length-grouped micro-batches;
- **baseline**: ``Trainer`` over ``prepare_model_for_kbit_training`` + ``get_peft_model``,
  shuffled batches padded to the longest row (no grouping, no packing).

With ``--compare loss`` both sides are siqkit's loop, once with the plain loss (full
``seq x vocab`` logits, fp32) and once with the default one (``auto``: chunked, or Liger's
fused kernel on CUDA when installed; :mod:`siqkit.train.loss`), same model, data and seed;
``--vocab`` widens the twin's LM head (rows past the tokenizer's are never targets) so the
logits weigh what they do in a real student.

Tokens/s counts real (non-padding) tokens per second of training; peak memory is CUDA's
peak allocation on a GPU and the process's peak RSS on a CPU. Prints both and the ratios.

    python benchmarks/train.py --threads 1                 # CPU, about a minute on 2 idle cores
    python benchmarks/train.py --device cuda --hidden 1024 --layers 8 --steps 50 --micro-batch 8
    python benchmarks/train.py --compare loss --vocab 32768 --threads 1 --steps 6   # CPU, a few minutes
    python benchmarks/train.py --compare loss --device cuda --hidden 2048 --layers 28 --vocab 151936 \\
        --seq 2048 --micro-batch 2 --accum 8 --steps 10 --checkpointing
    python benchmarks/train.py --compare loss --device cuda --hidden 2048 --layers 28 --vocab 151936 \\
        --seq 2048 --micro-batch 1 --accum 16 --steps 10 --plan 8GB   # the planner's pick, estimate vs peak

``--plan`` plans the 4-bit (QLoRA) setting for the default loss; the plain side then runs
the same setting, which the plan did not size for it (it may not fit).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = "the red square sits left of a blue circle so we count two green triangles and add the dots".split()


def write_data(folder: Path, rows: int, seed: int = 0, min_words: int = 0) -> Path:
    """A text-only traces folder; reasoning lengths spread from 5 to ~300 words (at least ``min_words``)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(rows):
        n = max(min_words, int(5 * (60 ** rng.random())))  # log-uniform: many short, some long
        reasoning = " ".join(rng.choice(WORDS) for _ in range(n))
        question = f"Question {i}: " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 20))) + "?"
        lines.append({"id": f"t{i}", "seed_id": f"s{i}", "difficulty": "easy", "images": [],
                      "messages": [{"role": "user", "content": [{"type": "text", "text": question}]},
                                   {"role": "assistant", "content": [{"type": "text",
                                                                      "text": f"<think>\n{reasoning}\n</think>\n\n{i % 7}"}]}],
                      "answer": str(i % 7)})
    (folder / "data.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return folder


def _prepare(args):
    """Model-independent inputs both sides share: examples and their token counts."""
    from transformers import AutoTokenizer

    from siqkit.train.config import StageConfig
    from siqkit.train.data import Encoder, build_examples, load_traces

    tok = AutoTokenizer.from_pretrained(args.model)
    examples, _ = build_examples(load_traces(args.data), StageConfig(name="reason"), text_only=True, image_text="{caption}")
    encoder = Encoder(tok, vision=False, max_seq_len=args.seq)
    encoded = [encoder.encode(e) for e in examples]
    return tok, encoder, examples, encoded


def run_siqkit(args) -> dict:
    from siqkit.train.config import LoraConfig
    from siqkit.train.loop import LoopSettings, peak_memory_bytes, run_loop
    from siqkit.train.qlora import load_student

    _, encoder, examples, encoded = _prepare(args)
    student = load_student(args.model, method="qlora", freeze=[], lora=LoraConfig(r=16, alpha=32, dropout=0.05),
                           precision=args.precision, device=args.device, gradient_checkpointing=args.checkpointing)
    settings = LoopSettings(
        micro_batch=args.micro_batch, grad_accum=args.accum, epochs=100, max_steps=args.steps, learning_rate=2e-4,
        weight_decay=0.0, warmup_ratio=0.0, scheduler="cosine", max_grad_norm=1.0, save_every=10**9,
        keep_checkpoints=1, seed=0, batching="length_grouped", order="shuffle", precision=args.precision,
        device=args.device, loss=args.loss,
    )
    with tempfile.TemporaryDirectory() as tmp:
        _sync()
        t0 = time.perf_counter()
        result = run_loop(student.model, encoder, examples, encoded, settings, Path(tmp), "bench")
        _sync()
        seconds = time.perf_counter() - t0
    import torch

    reserved = int(torch.cuda.max_memory_reserved()) if args.device.startswith("cuda") else None
    return {"tokens": result["tokens"], "seconds": seconds, "peak_bytes": peak_memory_bytes(args.device),
            "reserved_bytes": reserved, "final_loss": result["final_loss"]}


def run_trainer(args) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig, Trainer, TrainingArguments

    from siqkit.train.loop import peak_memory_bytes

    tok, encoder, examples, encoded = _prepare(args)
    rows = []
    for ex, enc in zip(examples, encoded):
        batch = encoder.collate([ex], [enc])
        rows.append({"input_ids": batch["input_ids"][0].tolist(), "labels": batch["labels"][0].tolist()})
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.precision]
    model = AutoModelForCausalLM.from_pretrained(
        args.model, device_map={"": args.device}, dtype=dtype,
        quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                               bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype),
    )
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=args.checkpointing)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    pad = tok.pad_token_id

    def collate(items):
        width = max(len(i["input_ids"]) for i in items)
        ids = torch.full((len(items), width), pad)
        labels = torch.full((len(items), width), -100)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for r, i in enumerate(items):
            n = len(i["input_ids"])
            ids[r, :n], labels[r, :n], mask[r, :n] = torch.tensor(i["input_ids"]), torch.tensor(i["labels"]), 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}

    tokens = {"n": 0}

    class Counting(Trainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            tokens["n"] += int(inputs["attention_mask"].sum())
            return super().training_step(model, inputs, num_items_in_batch)

    with tempfile.TemporaryDirectory() as tmp:
        targs = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=args.micro_batch, gradient_accumulation_steps=args.accum,
            max_steps=args.steps, learning_rate=2e-4, lr_scheduler_type="cosine", logging_strategy="no",
            save_strategy="no", report_to=[], use_cpu=args.device == "cpu", bf16=args.precision == "bf16",
            fp16=args.precision == "fp16", seed=0, remove_unused_columns=False, dataloader_num_workers=0,
            gradient_checkpointing=args.checkpointing,
        )
        trainer = Counting(model=model, args=targs, train_dataset=rows, data_collator=collate)
        _sync()
        t0 = time.perf_counter()
        out = trainer.train()
        _sync()
        seconds = time.perf_counter() - t0
    return {"tokens": tokens["n"], "seconds": seconds, "peak_bytes": peak_memory_bytes(args.device),
            "final_loss": out.training_loss}


def _widen_head(model: Path, vocab: int | None) -> int:
    """Resize the twin's embeddings and LM head to ``vocab`` entries; return the vocabulary size."""
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(model)
    if vocab and vocab != m.config.vocab_size:
        m.resize_token_embeddings(vocab, mean_resizing=False)
        m.save_pretrained(model)
    return m.config.vocab_size


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="qwen3", help="text architecture of the twin (llama, qwen2, qwen3)")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--rows", type=int, default=256)
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--micro-batch", type=int, default=4)
    p.add_argument("--accum", type=int, default=4)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default=None, help="bf16, fp16 or fp32 (default: bf16 on cuda, fp32 on cpu)")
    p.add_argument("--checkpointing", action="store_true", help="gradient checkpointing on both sides")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--compare", choices=["trainer", "loss"], default="trainer",
                   help="trainer: siqkit vs Trainer + peft; loss: siqkit's loop with the plain vs the default loss")
    p.add_argument("--vocab", type=int, default=None, help="widen the twin's LM head to this many entries")
    p.add_argument("--plan", metavar="VRAM", help="train the memory planner's pick for this budget (e.g. 8GB) on "
                   "rows that fill --seq, and print its estimate against the measured peak")
    p.add_argument("--loss", default="auto", help=argparse.SUPPRESS)
    p.add_argument("--side", choices=["siqkit", "trainer"], help=argparse.SUPPRESS)
    p.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.precision = args.precision or ("bf16" if args.device.startswith("cuda") else "fp32")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.side:  # one side, in its own process (the main process planned already)
        result = (run_siqkit if args.side == "siqkit" else run_trainer)(args)
        print("RESULT " + json.dumps(result))
        return 0

    from siqkit.models.twins import make_tiny

    with tempfile.TemporaryDirectory() as tmp:
        heads = max(2, args.hidden // 64)
        model = make_tiny(args.arch, Path(tmp) / "model", hidden=args.hidden, layers=args.layers, heads=heads,
                          kv_heads=max(1, heads // 2), intermediate=args.hidden * 3, vocab_size=2048)
        vocab = _widen_head(model, args.vocab)
        data = write_data(Path(tmp) / "data", args.rows, min_words=args.seq if args.plan else 0)
        planned: list[str] = []
        if args.plan:
            from siqkit.train.memory import human, plan_memory

            plan = plan_memory(model, args.plan, args.seq, batch_size=args.micro_batch * args.accum,
                               quantization=("4bit",), precision=args.precision)
            args.micro_batch, args.accum, args.checkpointing = plan.micro_batch, plan.grad_accum, plan.gradient_checkpointing
            planned = ["--micro-batch", str(plan.micro_batch), "--accum", str(plan.grad_accum)]
            planned += ["--checkpointing"] if plan.gradient_checkpointing else []
            print(f"planner for {args.plan}: micro-batch {plan.micro_batch} x {plan.grad_accum}, checkpointing "
                  f"{plan.gradient_checkpointing}, estimate {human(plan.estimate_bytes)} (fits: {plan.fits}), "
                  "every row filling --seq")
        print(f"{args.arch} twin, hidden {args.hidden}, {args.layers} layers, vocab {vocab}, NF4 4-bit + LoRA r=16 on "
              f"{args.device} ({args.precision}); {args.steps} steps of {args.micro_batch} x {args.accum} rows, "
              f"{args.rows} rows of " + ("--seq tokens" if args.plan else "5 to ~300 reasoning words"))
        sides = {"trainer": [("trainer", "trainer", "auto"), ("siqkit", "siqkit", "auto")],
                 "loss": [("trainer", "siqkit", "plain"), ("siqkit", "siqkit", "auto")]}[args.compare]
        results = {}
        for key, side, loss in sides:
            cmd = [sys.executable, __file__, *(argv if argv is not None else sys.argv[1:]), *planned, "--side", side,
                   "--loss", loss, "--model", str(model), "--data", str(data)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
            if done.returncode or line is None:
                print(done.stderr[-3000:], file=sys.stderr)
                return 1
            results[key] = json.loads(line[len("RESULT "):])
    labels = {"trainer": (("trainer", "Trainer + peft (padded)"), ("siqkit", "siqkit (length-grouped)")),
              "loss": (("trainer", "siqkit, plain loss"), ("siqkit", "siqkit, default loss"))}[args.compare]
    print(f"{'side':<28} {'tokens':>8} {'seconds':>8} {'tokens/s':>9} {'peak memory':>12} {'final loss':>10}")
    for side, label in labels:
        r = results[side]
        print(f"{label:<28} {r['tokens']:>8} {r['seconds']:>8.2f} {r['tokens'] / r['seconds']:>9.1f} "
              f"{r['peak_bytes'] / 2**20:>9.0f} MiB {r['final_loss']:>10.3f}")
    if args.plan:
        for side, label in labels:
            r = results[side]
            reserved = f", reserved {r['reserved_bytes'] / 2**30:.2f} GiB" if r.get("reserved_bytes") else ""
            print(f"{label}: peak {r['peak_bytes'] / 2**30:.2f} GiB{reserved} = "
                  f"{r['peak_bytes'] / plan.estimate_bytes:.3f}x the planner's estimate")
    ours, base = results["siqkit"], results["trainer"]
    what = "siqkit / Trainer" if args.compare == "trainer" else "default / plain loss"
    print(f"tokens/s ratio ({what}): {(ours['tokens'] / ours['seconds']) / (base['tokens'] / base['seconds']):.2f}x; "
          f"peak memory ratio: {ours['peak_bytes'] / base['peak_bytes']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
