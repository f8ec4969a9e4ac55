"""What ships next to the GGUF files: an Ollama Modelfile and a model card with lineage.

The Modelfile carries the chat template in Ollama's Go-template syntax and the stop tokens
(the end-of-turn token, so generation ends where the model ends its answer). The model card
(a README.md) opens with the Hub's YAML header (:mod:`siqkit.export.cards`), then says where
the model came from (recipe, data subset, base checkpoint), which files there are, how each
quant type compared with the Hugging Face model, and how to run it: llama.cpp's tools,
llama-cpp-python (with ``MTMDChatHandler`` for the mmproj: it applies the chat template stored
in the GGUF; ``Qwen25VLChatHandler`` injects its own system prompt, which a student trained
without one answers badly) and Ollama.
"""

from __future__ import annotations

from pathlib import Path

import gguf

from siqkit.export.cards import CARD_MARK, base_license, base_model_id, cell, header

MODELFILE_MARK = "# Ollama Modelfile for"
# Ollama templates for the chat formats siqkit's students use, keyed by their turn tokens.
_CHATML = (
    '{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}'
    '{{- range $i, $_ := .Messages }}{{- $last := eq (len (slice $.Messages $i)) 1 }}'
    '<|im_start|>{{ .Role }}\n{{ .Content }}{{ if or (ne .Role "assistant") (not $last) }}<|im_end|>\n{{ end }}'
    '{{- if and $last (ne .Role "assistant") }}<|im_start|>assistant\n{{ end }}{{- end }}'
)
_LLAMA3 = (
    '{{- if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>{{ end }}'
    '{{- range $i, $_ := .Messages }}{{- $last := eq (len (slice $.Messages $i)) 1 }}'
    '<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}'
    '{{ if or (ne .Role "assistant") (not $last) }}<|eot_id|>{{ end }}'
    '{{- if and $last (ne .Role "assistant") }}<|start_header_id|>assistant<|end_header_id|>\n\n{{ end }}{{- end }}'
)
_FORMATS = (
    ("<|im_start|>", "<|im_end|>", _CHATML, ("<|im_end|>", "<|endoftext|>")),
    ("<|start_header_id|>", "<|eot_id|>", _LLAMA3, ("<|eot_id|>", "<|end_of_text|>")),
)


def _vocab(path: Path) -> tuple[set[str], str | None]:
    reader = gguf.GGUFReader(path)
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    template = reader.fields.get("tokenizer.chat_template")
    return set(tokens.contents() if tokens else ()), (template.contents() if template else None)


def write_modelfile(gguf_path: str | Path, out: str | Path | None = None, *, mmproj: str | Path | None = None,
                    num_ctx: int = 4096) -> Path:
    """Write an Ollama Modelfile for ``gguf_path`` (default: ``Modelfile`` beside it); returns its path.

    Paths in ``FROM`` are relative to the Modelfile, so the folder can be moved as a whole.
    Decoding is the one siqkit evaluates with (greedy: temperature 0, no repeat penalty), so
    ``ollama run`` reproduces the held-out answers instead of Ollama's sampling defaults.
    """
    path = Path(gguf_path)
    out = Path(out) if out else path.parent / "Modelfile"
    tokens, _ = _vocab(path)
    lines = [f"{MODELFILE_MARK} {path.name}: ollama create <name> -f {out.name}",
             f"FROM {_rel(path, out.parent)}"]
    if mmproj:
        lines.append("# vision projector (llama.cpp mmproj); Ollama versions without separate-projector")
        lines.append("# support need it merged into their own format")
        lines.append(f"FROM {_rel(Path(mmproj), out.parent)}")
    fmt = next((f for f in _FORMATS if f[0] in tokens and f[1] in tokens), None)
    if fmt is None:
        lines.append("# chat format not recognised: Ollama falls back to the template stored in the GGUF")
    else:
        lines.append(f'TEMPLATE """{fmt[2]}"""')
        lines.extend(f'PARAMETER stop "{stop}"' for stop in fmt[3] if stop in tokens)
    lines.append(f"PARAMETER num_ctx {num_ctx}")
    lines += ["# the decoding of siqkit's evaluation: greedy, no repeat penalty",
              "PARAMETER temperature 0", "PARAMETER repeat_penalty 1"]
    out.write_text("\n".join(lines) + "\n")
    return out


def _rel(path: Path, base: Path) -> str:
    """``./name`` for a file in ``base`` (or below it), else the absolute path."""
    try:
        return f"./{path.resolve().relative_to(base.resolve())}"
    except ValueError:
        return str(path.resolve())


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _python_snippet(gguf_name: str, mmproj: str | None) -> list[str]:
    """A llama-cpp-python script that loads the file (and its mmproj) and asks one question."""
    if mmproj is None:
        return ["```python", "from llama_cpp import Llama", "",
                f'llm = Llama(model_path="{gguf_name}", n_ctx=4096, verbose=False)',
                'reply = llm.create_chat_completion(messages=[{"role": "user", "content": "What is 12 + 30?"}],',
                "                                   temperature=0.0, max_tokens=256)",
                'print(reply["choices"][0]["message"]["content"])', "```"]
    return ["```python", "from pathlib import Path", "", "from llama_cpp import Llama",
            "from llama_cpp.llama_chat_format import MTMDChatHandler", "",
            f'llm = Llama(model_path="{gguf_name}", n_ctx=4096, verbose=False,',
            f'            chat_handler=MTMDChatHandler(clip_model_path="{mmproj}", verbose=False))',
            'image = Path("photo.png").resolve().as_uri()',
            'reply = llm.create_chat_completion(messages=[{"role": "user", "content": [',
            '    {"type": "image_url", "image_url": {"url": image}},',
            '    {"type": "text", "text": "What is in the picture?"}]}], temperature=0.0, max_tokens=256)',
            'print(reply["choices"][0]["message"]["content"])', "```"]


def write_model_card(result: dict, out: str | Path, *, lineage: dict | None = None) -> Path:
    """Write a README.md model card from an :func:`siqkit.export.export_model` result.

    ``lineage`` (recipe name, data subset, metrics, ...) is shown as a table, nested values as
    ``key: value`` lines; its ``base_model`` (the checkpoint the model was trained from: a
    repo id or folder) goes into the header as described in :mod:`siqkit.export.cards`. The
    export stage fills it from the run store.
    """
    out = Path(out)
    name = result.get("name") or Path(result["model_dir"]).name
    lineage = dict(lineage or {})
    base = lineage.pop("base_model", None)
    base_id = base_model_id(base) or base_model_id(result["model_dir"])
    license = base_license(result["model_dir"])
    if license == "unknown" and base and Path(str(base)).is_dir():
        license = base_license(base)
    lines = [header(base=base_id, relation="quantized", library="gguf", license=license,
                    model_type=result["model_type"], extra_tags=["gguf", "llama.cpp"]).rstrip(),
             CARD_MARK, f"# {name} (GGUF)", "",
             f"Exported by siqkit from `{result['model_dir']}` (`{result['model_type']}`, "
             f"llama.cpp architecture `{result['gguf_arch']}`)"
             + (f", trained from `{base}`." if base else "."), ""]
    if license == "unknown":
        lines += ["The license is not known to siqkit: set `license` in the header before publishing.", ""]
    if lineage:
        lines += ["## Lineage", "", "| | |", "|---|---|"]
        lines += [f"| {key} | {cell(value)} |" for key, value in lineage.items()]
        lines.append("")
    lines += ["## Files", "", "| file | type | size | top-1 agreement | greedy agreement | max logit error | check |",
              "|---|---|---|---|---|---|---|"]
    for item in result["files"]:
        v = item.get("verify") or {}
        t = v.get("text") or {}
        check = "—" if not v else ("passed" if v.get("passed") else "FAILED")
        lines.append(
            f"| `{Path(item['path']).name}` | {item['quant']} | {_size(item['size_bytes'])} | "
            f"{t.get('top1_decisive', float('nan')):.3f} | {t.get('greedy_agreement', float('nan')):.3f} | "
            f"{t.get('logit_err_rel', float('nan')):.4f} std | {check} |")
    if result.get("mmproj"):
        lines.append(f"| `{Path(result['mmproj']).name}` | mmproj f16 | {_size(Path(result['mmproj']).stat().st_size)} "
                     "| | | | |")
    image = next((f["verify"]["image"] for f in result["files"] if (f.get("verify") or {}).get("image")), None)
    lines += ["", "Top-1 agreement counts positions where the Hugging Face model's top token leads by more than "
              "a near-tie; greedy agreement is the share of greedy tokens that match the Hugging Face "
              "continuation; the logit error is relative to the Hugging Face logits' standard deviation."]
    if image:
        lines += ["", f"With an image, the next-token logits differ by at most {image['next_logit_err_rel']:.4f} std "
                  f"(tolerance 0.05) and the greedy answer matches for {image['greedy_agreement']:.0%} of its tokens."]
    gguf_name = Path(result["gguf"]).name
    mmproj = Path(result["mmproj"]).name if result.get("mmproj") else None
    lines += ["", "## Run it", "", "llama.cpp's tools:", "", "```bash"]
    if mmproj:
        lines.append(f"llama-mtmd-cli -m {gguf_name} --mmproj {mmproj} --image photo.png "
                     "-p 'What is in the picture?'")
    lines += [f"llama-cli -m {gguf_name} -cnv", "```", "", "llama-cpp-python, in this folder:", ""]
    lines += _python_snippet(gguf_name, mmproj)
    if mmproj:
        lines += ["", "`MTMDChatHandler` renders the chat template stored in the GGUF, as the model was trained. "
                  "Do not use `Qwen25VLChatHandler`: it injects its own system prompt (\"You are a helpful "
                  "assistant.\"), which this model never saw, and its answers turn to garbage."]
    if result.get("modelfile"):
        tag = name.lower().replace(" ", "-")
        lines += ["", "Ollama:", "", "```bash", f"ollama create {tag} -f {Path(result['modelfile']).name}",
                  f"ollama run {tag}", "```"]
    lines.append("")
    out.write_text("\n".join(lines))
    return out
