"""Shared pieces of the reference-model scripts: prompt format, tokenizer, model config,
batched generation, PRM input format and scoring, metrics. Needs torch, transformers 5,
tokenizers (the GPU machine has them)."""
import json
import os
import random
import time

import torch
import torch.nn.functional as F

import task

# ---------------------------------------------------------------- formats (the C++ side relies on these)
IM_START, IM_END, ENDOFTEXT, STEP_TAG = "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|step|>"
SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END, STEP_TAG]
POSITIVE, NEGATIVE = "+", "-"
# Qwen2's pre-tokenizer split: every digit is its own pre-token, which arithmetic needs.
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+")
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
TEMPERATURE = 0.8


def prompt_text(question):
    """Exactly what Arbor's chatml template renders for one user message, no system message."""
    return f"{IM_START}user\n{question}{IM_END}\n{IM_START}assistant\n"


def solution_text(steps):
    return task.STEP_SEPARATOR.join(steps)


def prm_text(question, steps):
    """PRM input: the policy's prompt, then each step followed by the step tag, steps joined by
    the step separator. The PRM's P(correct) for a step is read at its tag token."""
    return prompt_text(question) + task.STEP_SEPARATOR.join(s.strip() + STEP_TAG for s in steps)


# ---------------------------------------------------------------- tokenizer
def train_tokenizer(problems, vocab_size=512):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    corpus = []
    for p in problems:
        corpus.append("user\n" + p["question"])
        corpus.append("assistant\n" + solution_text(p["steps"]))
    tok.train_from_iterator(corpus, trainer=trainer)
    return tok


def save_tokenizer(tok, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "chat_template": CHAT_TEMPLATE,
        "bos_token": None,
        "eos_token": IM_END,
        "pad_token": ENDOFTEXT,
        "add_bos_token": False,
        "additional_special_tokens": [IM_START, IM_END, STEP_TAG],
        "model_max_length": 512,
    }
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)


def load_tokenizer(model_dir):
    from tokenizers import Tokenizer
    return Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))


class Tok:
    """Token ids of the fixed vocabulary pieces."""

    def __init__(self, tok):
        self.tok = tok
        self.vocab_size = tok.get_vocab_size()
        self.im_end = tok.token_to_id(IM_END)
        self.pad = tok.token_to_id(ENDOFTEXT)
        self.step_tag = tok.token_to_id(STEP_TAG)
        self.positive = tok.token_to_id(POSITIVE)
        self.negative = tok.token_to_id(NEGATIVE)
        for name in ("im_end", "pad", "step_tag", "positive", "negative"):
            assert getattr(self, name) is not None, f"tokenizer lacks {name}"

    def encode(self, text):
        return self.tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts):
        return [e.ids for e in self.tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids):
        return self.tok.decode(ids, skip_special_tokens=True)


# ---------------------------------------------------------------- model
def policy_config(tk, layers=4, intermediate=768):
    from transformers import LlamaConfig
    return LlamaConfig(
        vocab_size=tk.vocab_size, hidden_size=256, intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, head_dim=64, max_position_embeddings=512,
        rms_norm_eps=1e-5, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=False, initializer_range=0.02, bos_token_id=None,
        eos_token_id=tk.im_end, pad_token_id=tk.pad, attention_bias=False, mlp_bias=False)


def save_model(model, tk, tok, out_dir, dtype=torch.bfloat16):
    """Hugging Face layout: config.json, model.safetensors (bf16), generation_config.json,
    tokenizer.json, tokenizer_config.json."""
    import copy

    from transformers import GenerationConfig
    os.makedirs(out_dir, exist_ok=True)
    m = copy.deepcopy(model).to("cpu", dtype=dtype)
    m.generation_config = GenerationConfig(eos_token_id=tk.im_end, pad_token_id=tk.pad,
                                           do_sample=False)
    m.save_pretrained(out_dir, safe_serialization=True)
    save_tokenizer(tok, out_dir)


def load_model(model_dir, device):
    """fp32 model on `device` (weights as stored, e.g. bf16-rounded)."""
    from transformers import LlamaForCausalLM
    m = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return m.to(device).eval()


def bf16_rounded_copy(model):
    import copy
    m = copy.deepcopy(model)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    return m.eval()


def seed_all(seed):
    random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


# ---------------------------------------------------------------- generation
@torch.no_grad()
def generate(model, tk, questions, *, samples=1, temperature=0.0, seed=0, max_new_tokens=160,
             batch_size=4096):
    """Returns, for each question, `samples` solution texts (list of lists) and the number of
    generated tokens of each (EOS included). temperature 0 = greedy."""
    from transformers import GenerationConfig
    device = next(model.parameters()).device
    prompts = tk.encode_batch([prompt_text(q) for q in questions])
    flat = [(i, ids) for i, ids in enumerate(prompts) for _ in range(samples)]
    texts = [[] for _ in questions]
    ntoks = [[] for _ in questions]
    gen_cfg = GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=temperature > 0,
        temperature=temperature if temperature > 0 else None, top_k=0 if temperature > 0 else None,
        top_p=1.0 if temperature > 0 else None, eos_token_id=tk.im_end, pad_token_id=tk.pad,
        bos_token_id=None)
    torch.manual_seed(seed)
    for start in range(0, len(flat), batch_size):
        chunk = flat[start:start + batch_size]
        width = max(len(ids) for _, ids in chunk)
        x = torch.full((len(chunk), width), tk.pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for r, (_, ids) in enumerate(chunk):
            x[r, width - len(ids):] = torch.tensor(ids)
            mask[r, width - len(ids):] = 1
        out = model.generate(input_ids=x.to(device), attention_mask=mask.to(device),
                             generation_config=gen_cfg)
        out = out[:, width:].cpu().tolist()
        for (i, _), row in zip(chunk, out):
            n = len(row)
            if tk.im_end in row:
                n = row.index(tk.im_end) + 1
            row = row[:n]
            texts[i].append(tk.decode([t for t in row if t != tk.im_end]))
            ntoks[i].append(n)
    return texts, ntoks


def accuracy(questions, texts):
    return sum(task.is_correct_solution(q, t[0]) for q, t in zip(questions, texts)) / len(questions)


# ---------------------------------------------------------------- PRM
def prm_example(tk, question, steps):
    """Token ids and the positions of the step tags (one per step)."""
    ids = tk.encode(prm_text(question, steps))
    tags = [i for i, t in enumerate(ids) if t == tk.step_tag]
    assert len(tags) == len(steps), (question, steps)
    return ids, tags


@torch.no_grad()
def prm_scores(prm, tk, items, batch_size=512, max_len=320):
    """items: [(question, steps)]. Returns per item a list of P(step correct)."""
    device = next(prm.parameters()).device
    encoded = [prm_example(tk, q, s) for q, s in items]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
    out = [None] * len(encoded)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        width = min(max_len, max(len(encoded[i][0]) for i in idx))
        x = torch.full((len(idx), width), tk.pad, dtype=torch.long)
        for r, i in enumerate(idx):
            ids = encoded[i][0][:width]
            x[r, :len(ids)] = torch.tensor(ids)
        logits = prm(input_ids=x.to(device)).logits.float()
        diff = (logits[..., tk.positive] - logits[..., tk.negative]).sigmoid().cpu()
        for r, i in enumerate(idx):
            out[i] = [diff[r, p].item() if p < width else 0.0 for p in encoded[i][1]]
    return out


def auroc(scores, labels):
    """Area under the ROC curve (Mann-Whitney U, ties averaged), computed in torch."""
    s = torch.as_tensor(scores, dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.bool)
    s_sorted, order = torch.sort(s)
    y_sorted = y[order]
    _, inverse, counts = torch.unique_consecutive(s_sorted, return_inverse=True,
                                                  return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    avg_rank = (ends - counts.double() + 1 + ends) / 2
    ranks = avg_rank[inverse]
    n_pos = y_sorted.sum().double()
    n_neg = y_sorted.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return ((ranks[y_sorted].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)).item()


AGGREGATIONS = {
    "min": lambda s: min(s) if s else 0.0,
    "last": lambda s: s[-1] if s else 0.0,
    "prod": lambda s: float(torch.tensor(s).prod()) if s else 0.0,
}


def best_of_n(questions, samples, scores, n, aggregation="min"):
    """Accuracy of picking, among the first n samples, the one with the best aggregated PRM
    score (first wins ties)."""
    agg = AGGREGATIONS[aggregation]
    right = 0
    for q, texts, sc in zip(questions, samples, scores):
        vals = [agg(s) for s in sc[:n]]
        best = max(range(n), key=lambda j: (vals[j], -j))
        right += task.is_correct_solution(q, texts[best])
    return right / len(questions)


def pass_at_n(questions, samples, n):
    return sum(any(task.is_correct_solution(q, t) for t in texts[:n])
               for q, texts in zip(questions, samples)) / len(questions)


def majority_at_n(questions, samples, n, scores=None):
    """Majority vote over final answers (weighted by PRM min-score when scores given)."""
    right = 0
    for k, (q, texts) in enumerate(zip(questions, samples)):
        votes = {}
        for j, t in enumerate(texts[:n]):
            a = task.extract_answer(t)
            if a is None:
                continue
            w = 1.0 if scores is None else AGGREGATIONS["min"](scores[k][j])
            votes[a] = votes.get(a, 0.0) + w
        if votes:
            best = max(votes.items(), key=lambda kv: kv[1])[0]
            right += best == int(task.solve(q)[-1][len(task.ANSWER_PREFIX):])
    return right / len(questions)


class Timer:
    def __init__(self):
        self.t0 = time.time()

    def __call__(self):
        return time.time() - self.t0
