#!/usr/bin/env python3
"""Golden fixtures for Arbor's runtime tests, made by the real libraries.

Run on the GPU machine (needs torch, transformers, tokenizers; no network):
    python3 tools/golden/make_golden.py --out tests/fixtures/golden

For each of two small random models (a LlamaForCausalLM with GQA and Llama-3
RoPE scaling, sharded fp32 checkpoint; a Qwen2ForCausalLM with QKV bias, bf16
checkpoint) it writes a folder with:
  config.json, model.safetensors(.index.json), generation_config.json
  tokenizer.json, tokenizer_config.json   byte-level BPE trained by `tokenizers`
  tokens.json   [{text, add_special_tokens, ids, decoded}]  encode/decode goldens
  logits.json   [{ids, logits: [[vocab] per position]}]    fp32 forward pass
  greedy.json   [{ids, continuation: [32 ids]}]            greedy, EOS ignored
"""
import argparse
import json
import os
import random

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers, Regex

LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+")

CORPUS_SEED_TEXT = [
    "The quick brown fox jumps over the lazy dog.",
    "Start with 17. Add 25, multiply by 3, subtract 9.",
    "17 + 25 = 42\n\n42 * 3 = 126\n\n126 - 9 = 117\n\nThe answer is 117",
    "Let's think step by step. We're told it's 3.14159 and they'll say 2,718,281.",
    "Grüße aus München! Ça va? naïve café résumé — “quotes” and ‘apostrophes’.",
    "日本語のテキストと中文文本，还有한국어 텍스트.",
    "Emoji: 😀🎉👍🏽 and flags 🇩🇪 plus math ∑∫√∞ ≠ ≤ ≥.",
    "    indented code:\n\tif (x == 1) { return y; }\n\n\n",
    "Numbers 1234567890 and 00042 and -3.5e10 and 1/2.",
    "\\boxed{42} #### 7 The answer is 12.",
]

TEST_STRINGS = [
    "Hello world",
    "Start with 17. Add 25, multiply by 3, subtract 9. What is the result?",
    "17 + 25 = 42\n\n42 * 3 = 126\n\n126 - 9 = 117\n\nThe answer is 117",
    "Grüße aus München! naïve café",
    "日本語のテキスト 中文 한국어",
    "Emoji 😀🎉👍🏽🇩🇪 ∑∫√∞",
    "   leading spaces and trailing   ",
    "tabs\tand\nnewlines\r\n\r\nand   runs      of spaces",
    "1234567890 00042 3.14159 -7",
    "they'll we're it's I'M YOU'LL",
    "\\boxed{42} #### 7",
    "a\n\n\nb",
    " ",
    "",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<|begin_of_text|>Hi<|eot_id|>",
    "unseen: ¿¡ Ωμέγα ÆØÅ",
]


def build_tokenizer(pattern, specials, bos, vocab_size, seed):
    random.seed(seed)
    corpus = []
    for _ in range(400):
        corpus.append(" ".join(random.sample(CORPUS_SEED_TEXT, 3)))
        a, b = random.randint(1, 999), random.randint(1, 999)
        corpus.append(f"{a} + {b} = {a + b}\n\n{a + b} * 2 = {2 * (a + b)}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(corpus, trainer=trainer)
    if bos is not None:
        bos_id = tok.token_to_id(bos)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


# The models' own chat templates, rendered by runtime/text/jinja: Meta Llama 3
# Instruct's, and the system-less ChatML loop of the bundled models (models/).
LLAMA3_INSTRUCT_TEMPLATE = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
CHATML_TEMPLATE = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False)


def make(kind, out_dir, seed):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM
    torch.manual_seed(seed)
    os.makedirs(out_dir, exist_ok=True)
    if kind == "llama":
        specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                    "<|end_header_id|>", "<|eot_id|>"]
        tok = build_tokenizer(LLAMA3_PATTERN, specials, "<|begin_of_text|>", 600, seed)
        eos = tok.token_to_id("<|eot_id|>")
        cfg = LlamaConfig(
            vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=160,
            num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=1024, rms_norm_eps=1e-5, initializer_range=0.25,
            tie_word_embeddings=False, bos_token_id=tok.token_to_id("<|begin_of_text|>"),
            eos_token_id=eos,
            rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                             "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                             "original_max_position_embeddings": 64})
        model = LlamaForCausalLM(cfg)
        tok_cfg = {"chat_template": LLAMA3_INSTRUCT_TEMPLATE,
                   "bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}
        save_kwargs = {"max_shard_size": "100KB"}  # sharded, with an index
        dtype = torch.float32
    else:
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        tok = build_tokenizer(QWEN2_PATTERN, specials, None, 500, seed)
        eos = tok.token_to_id("<|im_end|>")
        cfg = Qwen2Config(
            vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=128,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
            max_position_embeddings=1024, rms_norm_eps=1e-6, initializer_range=0.25,
            tie_word_embeddings=True, eos_token_id=eos, bos_token_id=None,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})
        model = Qwen2ForCausalLM(cfg)
        with torch.no_grad():  # give the QKV biases real values
            for layer in model.model.layers:
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj,
                             layer.self_attn.v_proj):
                    proj.bias.normal_(0.0, 0.2)
        tok_cfg = {"chat_template": CHATML_TEMPLATE,
                   "eos_token": "<|im_end|>"}
        save_kwargs = {}
        dtype = torch.bfloat16
    with torch.no_grad():  # norms away from 1 so a missing weight shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    model = model.to(dtype).eval()
    model.save_pretrained(out_dir, safe_serialization=True, **save_kwargs)
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    write_json(os.path.join(out_dir, "tokenizer_config.json"), tok_cfg)

    # Reference in fp32 on the stored (possibly bf16-rounded) weights.
    ref = model.float().to("cuda" if torch.cuda.is_available() else "cpu")
    dev = next(ref.parameters()).device
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

    tokens = []
    for text in TEST_STRINGS:
        for add in (False, True):
            ids = tok.encode(text, add_special_tokens=add).ids
            tokens.append({"text": text, "add_special_tokens": add, "ids": ids,
                           "decoded": tok.decode(ids, skip_special_tokens=False)})
    write_json(os.path.join(out_dir, "tokens.json"), tokens)

    prompts = [tok.encode(t).ids for t in (
        "Start with 17. Add 25, multiply by 3.",
        "17 + 25 = 42\n\n42 * 3 =",
        "Grüße 😀 日本",
        "The answer is")]
    g = torch.Generator().manual_seed(seed + 1)
    prompts.append(torch.randint(0, cfg.vocab_size, (40,), generator=g).tolist())
    logits_out, greedy_out = [], []
    with torch.no_grad():
        for ids in prompts:
            x = torch.tensor([ids], device=dev)
            logits = ref(input_ids=x).logits[0].float().cpu()
            logits_out.append({"ids": ids, "logits": [[round(v, 6) for v in row.tolist()]
                                                      for row in logits]})
            gen = ref.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=32,
                               min_new_tokens=32, do_sample=False, eos_token_id=None,
                               pad_token_id=0)
            greedy_out.append({"ids": ids, "continuation": gen[0, len(ids):].tolist()})
    write_json(os.path.join(out_dir, "logits.json"), logits_out)
    write_json(os.path.join(out_dir, "greedy.json"), greedy_out)
    print(f"{kind}: vocab {cfg.vocab_size}, {sum(p.numel() for p in model.parameters())} params,"
          f" {len(tokens)} token cases, {len(prompts)} prompts -> {out_dir}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures/golden")
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    make("llama", os.path.join(args.out, "llama"), args.seed)
    make("qwen2", os.path.join(args.out, "qwen2"), args.seed + 7)


if __name__ == "__main__":
    main()
