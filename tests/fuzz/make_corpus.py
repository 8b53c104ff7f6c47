#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora into tests/fuzz/corpus/<target>/.

Seeds are small: fixture files of the repository, requests like the tests'
(protobuf seeds are text format encoded with `protoc --encode`), and a few
hand-made safetensors files. Run from anywhere; rerun after changing it and
commit the result. Each seed's name says what it is.
"""
import json
import os
import shutil
import struct
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "fuzz", "corpus")


def write(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def copy(target, name, path):
    with open(os.path.join(ROOT, path), "rb") as f:
        write(target, name, f.read())


def encode(message, proto, text):
    return subprocess.run(
        ["protoc", "--proto_path=" + os.path.join(ROOT, "proto"), "--encode=arbor.v1." + message,
         "arbor/v1/" + proto], input=text.encode(), check=True, capture_output=True).stdout


def safetensors(tensors, pad=True):
    header, data = {}, b""
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header, separators=(",", ":")).encode()
    while pad and len(text) % 8:
        text += b" "
    return struct.pack("<Q", len(text)) + text + data


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    # config.json
    for name, path in [("llama", "tests/fixtures/golden/llama/config.json"),
                       ("qwen2", "tests/fixtures/golden/qwen2/config.json"),
                       ("policy", "models/policy/config.json"),
                       ("prm", "models/prm/config.json")]:
        copy("model_config", name + ".json", path)
    write("model_config", "mistral.json", json.dumps({
        "architectures": ["MistralForCausalLM"], "vocab_size": 100, "hidden_size": 32,
        "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "sliding_window": 64, "max_position_embeddings": 256,
        "rope_scaling": {"type": "linear", "factor": 2.0}, "eos_token_id": [1, 2]}))
    write("model_config", "transformers5.json", json.dumps({
        "architectures": ["Qwen2ForProcessRewardModel"], "vocab_size": 100, "hidden_size": 32,
        "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4,
        "head_dim": 8, "id2label": {"0": "a", "1": "b"}, "dtype": "bfloat16",
        "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                            "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                            "original_max_position_embeddings": 64}}))

    # safetensors
    f32 = struct.pack("<4f", 1, -2, 3.5, 0)
    write("safetensors", "f32_bf16_f16", safetensors([
        ("w", "F32", [2, 2], f32), ("b", "BF16", [2], b"\x80\x3f\x40\xc0"),
        ("h", "F16", [3], b"\x00\x3c\x00\xc0\x01\x00"), ("s", "F32", [], f32[:4])]))
    write("safetensors", "ints_empty", safetensors([
        ("ids", "I64", [2], struct.pack("<2q", 7, -1)), ("e", "F32", [0, 4], b""),
        ("m", "BOOL", [2], b"\x01\x00")]))
    write("safetensors", "unpadded", safetensors([("x", "U8", [3], b"abc")], pad=False))

    # tokenizer.json (and tokenizer_config.json after a NUL)
    for name, d in [("llama3", "tests/fixtures/golden/llama"),
                    ("qwen2", "tests/fixtures/golden/qwen2"),
                    ("llama2_style", "tests/fixtures/tokenizers/llama2_style"),
                    ("metaspace", "tests/fixtures/tokenizers/metaspace_style"),
                    ("policy", "models/policy")]:
        with open(os.path.join(ROOT, d, "tokenizer.json"), "rb") as f:
            tok = f.read()
        with open(os.path.join(ROOT, d, "tokenizer_config.json"), "rb") as f:
            cfg = f.read()
        write("tokenizer_json", name, tok + b"\0" + cfg)

    # tokenizer: a choice byte (tokenizer index, decode bit), then text or ids
    texts = ["Hello world", "  12 + 34 = 46\n\nThe answer is 46.", "\u00e9t\u00e9 \u20ac \U0001f600",
             "<|im_start|>user\nadd 3 5<|im_end|>", "<s>[INST] hi [/INST]", "\t\r\n  x  y"]
    for i, text in enumerate(texts):
        write("tokenizer", "encode%d" % i, bytes([i % 5]) + text.encode())
    write("tokenizer", "decode", bytes([5]) + struct.pack("<6i", 0, 1, 2, 100, 255, -1))

    # chat templates: choice, jinja, system, raw suffix, then (role, content) pairs
    write("chat_template", "chatml", b"\x00{% for m in messages %}<|im_start|>{{ m.role }}\0"
          b"You are a helpful assistant.\0\nAnswer:\0\x01add 3 5\0\x02 8\0\x01and 4?")
    write("chat_template", "llama3", b"\x31<|start_header_id|>\0\0\0\x00be brief\0\x01 hi ")
    write("chat_template", "raw", b"\x22plain\0\0\nA:\0\x01q1\0\x02a1\0\x01q2")

    # answer extraction: options, pattern, NUL, text
    for i, (pattern, text) in enumerate([
            ("", "so \\boxed{\\frac{1}{2}} is it"),
            ("", "The answer is 1,000.50."),
            ("", "#### $x = 42$"),
            ("", "first 3 then 4\n\n5"),
            ("answer: (\\w+)", "answer: yes\nanswer: no"),
            ("", "\\boxed{\\text{(A)}} and \\boxed{\\dfrac{3}{4}}"),
            ("", "\\left( 3 \\right) 90^\\circ 50\\%")]):
        write("answer", "seed%d" % i, bytes([i % 4]) + pattern.encode() + b"\0" + text.encode())

    # SolveRequest
    solves = {
        "greedy": 'job_id: "j1" question: "add 3 5" model: "policy" greedy {}',
        "best_of_n": 'question: "add 3 5" best_of_n { n: 8 selection: SELECTION_WEIGHTED_VOTE '
                     'aggregation: SCORE_AGGREGATION_MIN min_vote_fraction: 0.3 } '
                     'reward_model: "prm" sampling { temperature: 0.7 top_p: 0.9 top_k: 20 } '
                     'stop { step_delimiters: "\\n\\n" max_step_tokens: 64 } seed: 7',
        "beam": 'question: "q" beam_search { n: 8 beam_width: 2 num_iterations: 5 lookahead: 1 } '
                'budget { max_generated_tokens: 1000 max_steps: 10 deadline_ms: 5000 } '
                'answer_extraction { pattern: "= (\\\\d+)" } max_candidates: 4',
        "dvts": 'question: "q" dvts { n: 16 beam_width: 4 num_iterations: 3 } chat_template: "chatml"',
        "particle_filter": 'question: "q" particle_filter { n: 8 temperature: 0.5 '
                           'resampling: RESAMPLING_SYSTEMATIC ess_threshold: 0.5 '
                           'weight_update: WEIGHT_UPDATE_CUMULATIVE absorb_finished: true '
                           'final_selection: FINAL_SELECTION_WEIGHTED_VOTE num_iterations: 6 } '
                           'max_solution_tokens: 512',
    }
    for name, text in solves.items():
        write("solve_request", name, encode("SolveRequest", "reasoning.proto", text))

    # OpenAI bodies: a byte (0 chat, 1 completion), then the body
    user = '"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "add 3 5"}]'
    bodies = {
        "chat": "{%s}" % user,
        "chat_n": '{%s, "n": 4, "model": "policy", "seed": 9, "temperature": 0.5}' % user,
        "chat_stream": '{%s, "stream": true, "stream_options": {"include_usage": true}}' % user,
        "chat_beam": '{%s, "arbor": {"strategy": "beam_search", "n": 8, "beam_width": 2, '
                     '"num_iterations": 5, "lookahead": 1, "aggregation": "min", '
                     '"reward_model": "prm", "budget": {"max_generated_tokens": 100}, '
                     '"timeout_ms": 2000}}' % user,
        "chat_pf": '{%s, "arbor": {"strategy": "particle_filter", "n": 4, "temperature": 0.5, '
                   '"resampling": "RESAMPLING_SYSTEMATIC"}}' % user,
    }
    for name, body in bodies.items():
        write("openai_request", name, b"\x00" + body.encode())
    write("openai_request", "completion_best_of", b"\x01" + b'{"prompt": "1+1=", "best_of": 8, "n": 2, "max_tokens": 16}')
    write("openai_request", "completion_vote", b"\x01" + b'{"prompt": ["q"], "arbor": {"selection": "majority_vote", "n": 3}}')

    # ExtendRequest
    extends = {
        "tokens": 'job_id: "j" model: "policy" prompt_tokens: [1, 2, 3] '
                  'branches { suffix_tokens: [4, 5] num_samples: 2 seed: 9 } branches {} '
                  'sampling { temperature: 0.8 top_p: 0.95 top_k: 10 } '
                  'stop { step_delimiters: "\\n\\n" max_step_tokens: 32 } return_token_logprobs: true',
        "text": 'prompt_text: "add 3 5" chat_template: "chatml" branches { num_samples: 4 } '
                'stop { no_step_delimiter: true ignore_eos: true }',
    }
    for name, text in extends.items():
        write("extend_request", name, encode("ExtendRequest", "generator.proto", text))

    # ScoreRequest
    write("score_request", "two", encode("ScoreRequest", "verifier.proto",
          'job_id: "j" model: "prm" question: "add 3 5" candidates { steps: ["3 + 5 = 8", "The answer is 8"] } '
          'candidates { steps: "8" } last_step_only: true'))

    # prm_config.json: a choice byte (kind, value head), then the file
    copy("reward_config", "prm", "models/prm/prm_config.json")
    with open(os.path.join(OUT, "reward_config", "prm"), "rb") as f:
        prm = f.read()
    write("reward_config", "prm", b"\x00" + prm)
    write("reward_config", "value_head", b"\x11" + json.dumps({
        "kind": "value_head_prm", "step_tag": "<extra_0>", "positive_label": 1,
        "chat_template": "chatml"}).encode())
    write("reward_config", "orm", b"\x02" + json.dumps({
        "kind": "orm", "prompt_template": "Q: {question}\nA:", "step_template": "{step}",
        "positive_token": " yes", "negative_token": " no"}).encode())

    # request checks: any bytes
    write("request_checks", "ascii", b"hello")
    write("request_checks", "utf8", "\u00e9\u20ac\U0001f600".encode())
    write("request_checks", "broken", b"ok\xc3(\xf0\x9f\x98 \xed\xa0\x80 \xff")
    write("request_checks", "ids", struct.pack("<4i", 0, 5, 600, -3))


if __name__ == "__main__":
    sys.exit(main())
