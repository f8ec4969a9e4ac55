"""The mmproj (vision tower + projector) in llama.cpp's mtmd, against the Hugging Face model.

Three levels: the projector's image embeddings, the image-conditioned next-token logits and
greedy answer (``verify_gguf`` with an mmproj; tolerance ``IMAGE_LOGIT_TOL`` = 0.05 logit
stds, measured 0.002-0.005), and a chat completion with an image through
llama-cpp-python's own multimodal chat handler, which must stop at ``<|im_end|>``.
"""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from siqkit.export import GGUFExportError, verify_gguf, write_gguf, write_mmproj
from siqkit.export.runtime import VisionContext, open_llama
from siqkit.export.verify import IMAGE_LOGIT_TOL, HFReference, default_image
from siqkit.models import load_processor
from siqkit.models.twins import load_tiny, make_tiny

from .conftest import VL_ARCHS, vl_twin


@pytest.mark.parametrize("arch", VL_ARCHS)
def test_image_embeddings_match(vl_files, arch):
    hf, text, mmproj = vl_files(arch)
    image = default_image(hf)
    inputs = load_processor(hf).image_processor(images=[image], return_tensors="pt")
    with torch.no_grad():
        out = load_tiny(hf).eval().model.visual(inputs["pixel_values"], grid_thw=inputs["image_grid_thw"])
    ref = out.pooler_output.numpy()
    if arch == "qwen3_vl":  # llama.cpp stacks the deepstack features after the main embedding
        ref = np.concatenate([ref] + [f.numpy() for f in out.deepstack_features], axis=-1)
    llm = open_llama(text, n_ctx=128)
    try:
        with VisionContext(llm, mmproj) as vision:
            got = vision.image_embeddings(image)
    finally:
        llm.close()
    assert got.shape == ref.shape == (8, ref.shape[1])
    assert np.abs(got - ref).max() < 0.01 * ref.std()  # f16 weights


@pytest.mark.parametrize("arch", VL_ARCHS)
def test_image_prompt_matches(vl_files, arch):
    """Acceptance: the image-conditioned next-token logits agree within IMAGE_LOGIT_TOL."""
    hf, text, mmproj = vl_files(arch)
    s = verify_gguf(text, hf, mmproj=mmproj, reference=HFReference(hf, n_greedy=16), save=False)
    image = s["image"]
    assert s["passed"], s["failures"]
    assert image["prompt_errors"] == []
    assert image["next_top1"] == 1.0 and image["next_logit_err_rel"] < IMAGE_LOGIT_TOL / 5
    assert image["greedy_mismatched"] == 0 and image["top1_decisive"] == 1.0


def _data_uri(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def test_chat_handler_answers_image_and_stops(export_root):
    """llama-cpp-python's multimodal chat handler answers an image question, ending on <|im_end|>."""
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import MTMDChatHandler

    hf = vl_twin("qwen2_vl", export_root / "vl-chat", hidden=128, intermediate=256, init_std=0.1, seed=4)
    processor, image = load_processor(hf), default_image(hf)
    question = "What colour is the circle?"
    hf_messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    prompt = processor.apply_chat_template(hf_messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[prompt], images=[image], return_tensors="pt")
    n_prompt = inputs["input_ids"].shape[1]

    def hf_answer(max_new_tokens):
        with torch.no_grad():
            out = load_tiny(hf).eval().generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                                pad_token_id=processor.tokenizer.pad_token_id)
        return out[0, n_prompt:].tolist()

    # make the twin end its answer after a few tokens, by the weights alone
    seq = hf_answer(8)
    target = next(t for k, t in enumerate(seq) if k >= 2 and t not in seq[:k])
    eos = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    weights = load_file(hf / "model.safetensors")
    weights["lm_head.weight"][eos] = 1.5 * weights["lm_head.weight"][target]
    save_file(weights, hf / "model.safetensors", metadata={"format": "pt"})
    expected = hf_answer(32)
    assert expected[-1] == eos and len(expected) < 32

    text, mmproj = write_gguf(hf, export_root / "vl-chat.gguf", "f16"), write_mmproj(hf, export_root / "vl-chat.mm")
    llm = Llama(model_path=str(text), chat_handler=MTMDChatHandler(clip_model_path=str(mmproj), verbose=False),
                n_ctx=512, verbose=False)
    try:
        messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": _data_uri(image)}},
                                                 {"type": "text", "text": question}]}]
        reply = llm.create_chat_completion(messages=messages, max_tokens=32, temperature=0.0, top_k=1,
                                           repeat_penalty=1.0)
    finally:
        llm.close()
    choice = reply["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert reply["usage"]["completion_tokens"] == len(expected) - 1
    answer = processor.tokenizer.decode(expected[:-1])
    if "\ufffd" not in answer:  # a random twin may answer in partial UTF-8 bytes, which each side drops its own way
        assert choice["message"]["content"] == answer


def test_unsupported_and_mismatched_vision_towers(tmp_path):
    llava = make_tiny("llava", tmp_path / "llava")
    with pytest.raises(GGUFExportError, match="supported: qwen2_vl, qwen2_5_vl, qwen3_vl"):
        write_mmproj(llava, tmp_path / "m.gguf")
    q25 = make_tiny("qwen2_5_vl", tmp_path / "q25")
    if json.loads((q25 / "config.json").read_text())["vision_config"]["window_size"] != 112:
        with pytest.raises(GGUFExportError, match="112-pixel"):
            write_mmproj(q25, tmp_path / "m.gguf")
