#!/usr/bin/env python3
"""The peer benchmark (docs/GPU.md, "4. The benchmark"): `lora train` against HF transformers + PEFT on one GPU, side by side.

Both tools read the same files: a GPT-2 Medium- (or Large-) shaped model with random weights, made with
transformers and written with save_pretrained (safetensors, fp32), a GPT-2 byte-level BPE tokenizer beside
it, and one JSONL dataset of {"text": ...} lines. Both train LoRA r=4, alpha 32, bf16, batch 8, constant lr
2e-4, AdamW (weight decay 0.01), global-norm clipping 1.0, no evaluation, for --warmup + --steps optimizer
steps, and only the last --steps are timed.

  PEFT: AutoModelForCausalLM (attn_implementation="sdpa", bf16 weights) + LoraConfig(target_modules=
        ["c_attn"]): PEFT cannot put separate q and v adapters inside GPT-2's fused c_attn, so it adapts
        q, k and v with one adapter of shape (3d, r)(r, d). Ours adapts q and v (lora.targets [q, v]) with
        two of (d, r)(r, d). By the issue's formula the FLOPs are identical, 6r(d + 3d) = 2 * 6r(d + d)
        per layer, and so are the trainable parameters (4rd per layer); the functions differ (k adapted
        or not). torch.optim.AdamW(fused=True); batches prebuilt on the GPU before timing; the timed
        region is bracketed by torch.cuda.synchronize(). Runs in a subprocess of its own (--worker peft).
  ours: `lora train` (--lora-bin) with --device cuda on a recipe written here, log.every 1; tokens/s over
        the timed steps from metrics.jsonl (elapsed_s and tokens_per_s of each step).

Memory: both runs are watched from outside by one poller (NVML through pynvml if importable, else
`nvidia-smi --query-gpu=memory.used -lms 100`): the peak of the device's used memory minus its level
before the run (CUDA context and cached pool blocks included, for both), and the process's own figure
where NVML reports one. The ratio uses the poller's figures. Beside them, each tool's own allocator peak:
PEFT's torch.cuda.max_memory_allocated() and lora's peak_memory_mib from metrics.jsonl (the pool's
high-water mark of bytes in use plus the cuBLASLt workspace; no context, no cache), with their ratio.

Lengths: "fixed" gives every example 512 tokens (max_length truncates longer texts); "e2e" draws lengths
like E2E's training set (40 to 120 tokens, mode near 60) and pads per batch: PEFT in random order padded
to the batch's longest (what HF's collator does), ours with its own length-bucketed batches. Tokens/s
counts real tokens, never padding.

MFU: LoRA FLOPs per token = 4 * N_matmul + 6 * L * T * d (causal attention, T the example's
length) + 6 * r * (d_in + d_out) per adapter, with N_matmul the frozen matmul weights (12 L d^2 + V d,
the tied LM head included); against 989 TFLOP/s dense bf16 (H100 SXM; the H200 has the same peak; an
H100 PCIe 756), or --peak-tflops.

Usage (on the GPU node; scripts/bench_gpu.sh runs the standard set):
  python3 bench_gpu.py --lora-bin bin/lora --work /tmp/bench --shape medium --lengths fixed --out r.json
  python3 bench_gpu.py --dry-cpu [--lora-bin build/lora]     # tiny model, 2 steps, on the CPU
"""
import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import threading
import time

SHAPES = {  # GPT-2 family shapes (Radford et al. 2019); "tiny" is for --dry-cpu
    "medium": dict(n_layer=24, n_embd=1024, n_head=16),
    "large": dict(n_layer=36, n_embd=1280, n_head=20),
    "tiny": dict(n_layer=2, n_embd=64, n_head=2),
}
VOCAB, POSITIONS = 50257, 1024
PEAKS = {"default": 989e12, "pcie": 756e12}  # dense bf16 FLOP/s: H100 SXM and H200; H100 PCIe


def log(msg):
    print(msg, flush=True)


# ---------------------------------------------------------------- tokenizer and data

def byte_chars():
    """GPT-2's reversible byte -> printable character table (byte-level BPE's alphabet)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def write_minimal_tokenizer(dst, n_words, rng):
    """vocab.json + merges.txt where each of n_words three-letter words " xyz" is exactly one token."""
    bc = byte_chars()
    space = bc[ord(" ")]
    vocab = {bc[b]: i for i, b in enumerate(range(256))}
    merges = []
    letters = "abcdefghijklmnopqrstuvwxyz"
    def add(left, right):
        merges.append(f"{left} {right}")
        vocab.setdefault(left + right, len(vocab))
    for a in letters:
        add(space, a)
    for a in letters:
        for b in letters:
            add(space + a, b)
    triples = [a + b + c for a in letters for b in letters for c in letters]
    words = rng.sample(triples, min(n_words, len(triples)))
    for w in words:
        add(space + w[:2], w[2])
    vocab["<|endoftext|>"] = len(vocab)
    with open(os.path.join(dst, "vocab.json"), "w") as f:
        json.dump(vocab, f)
    with open(os.path.join(dst, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    return words


def prepare_tokenizer(model_dir, args, rng):
    """Tokenizer files into model_dir; returns (encode, eos id, word list, description). Encoding uses
    HF `tokenizers` (GPT-2's byte-level BPE), whose ids equal ours (README: the whole E2E dev set)."""
    from tokenizers import ByteLevelBPETokenizer
    src = args.tokenizer_src
    use_gpt2 = args.tokenizer == "gpt2" or (args.tokenizer == "auto" and src and
                                            os.path.exists(os.path.join(src, "encoder.json")))
    if use_gpt2:
        for name in ("encoder.json", "vocab.bpe"):
            shutil.copy(os.path.join(src, name), model_dir)
        files = ("encoder.json", "vocab.bpe")
        vocab = json.load(open(os.path.join(model_dir, "encoder.json")))
        words = sorted(w[1:] for w in vocab if w.startswith("\u0120") and w[1:].isascii() and w[1:].isalpha()
                       and w[1:].islower())
        words = rng.sample(words, min(4000, len(words)))
        kind = "gpt2 (" + src + ")"
    else:
        words = write_minimal_tokenizer(model_dir, 4000, rng)
        files = ("vocab.json", "merges.txt")
        kind = "minimal (one token per word)"
    for name in {"encoder.json", "vocab.bpe", "vocab.json", "merges.txt", "tokenizer.json"} - set(files):
        if os.path.exists(os.path.join(model_dir, name)):  # lora would read another kind's files first
            os.remove(os.path.join(model_dir, name))
    vocab = json.load(open(os.path.join(model_dir, files[0])))
    tok = ByteLevelBPETokenizer(os.path.join(model_dir, files[0]), os.path.join(model_dir, files[1]),
                                add_prefix_space=False)
    probe = " " + " ".join(words[:3])
    if len(tok.encode(probe).ids) < 3:
        raise SystemExit("error: the tokenizer in %s encodes %r as %s" % (model_dir, probe, tok.encode(probe).ids))
    return (lambda text: tok.encode(text).ids), vocab["<|endoftext|>"], words, kind


def e2e_length(rng):
    """Example length in tokens, shaped like E2E's training set: 40 to 120, mode near 60."""
    return max(40, min(120, int(round(rng.lognormvariate(math.log(62), 0.28)))))


def make_dataset(work, encode, eos, words, n_examples, lengths, max_length, rng):
    """train.jsonl for ours, ids.json (the same token ids, EOS appended, cut to max_length) for PEFT."""
    texts, ids = [], []
    for _ in range(n_examples):
        target = max_length if lengths == "fixed" else min(e2e_length(rng), max_length)
        n = target + 8 if lengths == "fixed" else target - 1   # fixed: longer than max_length
        text = "".join(" " + rng.choice(words) for _ in range(n))
        t = encode(text)
        while len(t) > target - 1 and lengths != "fixed":  # a word of several tokens: drop words
            text = text[: text.rfind(" ")]
            t = encode(text)
        texts.append(text)
        ids.append((t + [eos])[:max_length])
    with open(os.path.join(work, "train.jsonl"), "w") as f:
        for text in texts:
            f.write(json.dumps({"text": text}) + "\n")
    with open(os.path.join(work, "ids.json"), "w") as f:
        json.dump(ids, f)
    return [len(x) for x in ids]


def flops_per_token(shape, lens, r, adapters):
    """The issue's LoRA FLOPs per (real) token, averaged over the dataset's examples."""
    L, d = shape["n_layer"], shape["n_embd"]
    n_matmul = 12 * L * d * d + VOCAB * d
    dense = 4 * n_matmul + sum(6 * r * (din + dout) for din, dout in adapters) * L
    total = sum(t * dense + 6 * L * d * t * t for t in lens)
    return total / sum(lens)


# ---------------------------------------------------------------- memory watching

class MemoryPoller:
    """Peak device memory used while a child runs: NVML (pynvml) or nvidia-smi streaming every 100 ms."""

    def __init__(self):
        self.peak_total = self.baseline = self.peak_process = None
        self.pid, self.source = None, None
        self._stop = threading.Event()
        self._thread = self._smi = None

    def _nvml_loop(self, nv, handle):
        while not self._stop.is_set():
            used = nv.nvmlDeviceGetMemoryInfo(handle).used
            self.peak_total = max(self.peak_total or 0, used)
            try:
                for p in nv.nvmlDeviceGetComputeRunningProcesses(handle):
                    if p.pid == self.pid and p.usedGpuMemory:
                        self.peak_process = max(self.peak_process or 0, p.usedGpuMemory)
            except nv.NVMLError:
                pass
            time.sleep(0.05)

    def _smi_loop(self):
        for line in self._smi.stdout:
            try:
                self.peak_total = max(self.peak_total or 0, int(line.strip().split()[0]) << 20)
            except (ValueError, IndexError):
                pass

    def start(self, pid):
        self.pid = pid
        try:
            import pynvml as nv
            nv.nvmlInit()
            handle = nv.nvmlDeviceGetHandleByIndex(int(os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0] or 0))
            self.baseline = nv.nvmlDeviceGetMemoryInfo(handle).used
            self.source = "nvml"
            self._thread = threading.Thread(target=self._nvml_loop, args=(nv, handle), daemon=True)
        except Exception:
            if not shutil.which("nvidia-smi"):
                return self
            q = ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"]
            try:
                self.baseline = int(subprocess.run(q, capture_output=True, text=True, timeout=20).stdout.split()[0]) << 20
                self._smi = subprocess.Popen(q + ["-lms", "100"], stdout=subprocess.PIPE, text=True)
            except (OSError, ValueError, IndexError, subprocess.SubprocessError):
                return self
            self.source = "nvidia-smi"
            self._thread = threading.Thread(target=self._smi_loop, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self._smi:
            self._smi.terminate()
        if self._thread:
            self._thread.join(timeout=5)
        mib = lambda b: None if b is None else round(b / 2**20, 1)
        delta = None if self.peak_total is None or self.baseline is None else self.peak_total - self.baseline
        return {"peak_used_delta_mib": mib(delta), "peak_process_mib": mib(self.peak_process),
                "baseline_used_mib": mib(self.baseline), "source": self.source}


def run_watched(cmd, env, timeout, log_path):
    """Runs cmd with its output to log_path under the memory poller; returns (rc, memory, seconds)."""
    t0 = time.time()
    with open(log_path, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        poller = MemoryPoller().start(proc.pid)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rc = "timeout after %d s" % timeout
        mem = poller.stop()
    return rc, mem, time.time() - t0


def tail(path, n=25):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return "(no log)"


# ---------------------------------------------------------------- the two sides

def make_model(args, shape, model_dir, device):
    """Random GPT-2-shaped model via transformers, saved with save_pretrained (safetensors, fp32)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel
    cfg = GPT2Config(vocab_size=VOCAB, n_positions=args.positions, n_embd=shape["n_embd"],
                     n_layer=shape["n_layer"], n_head=shape["n_head"], resid_pdrop=0.0, embd_pdrop=0.0,
                     attn_pdrop=0.0)
    torch.manual_seed(args.seed)
    with torch.device(device):
        model = GPT2LMHeadModel(cfg)
    model.save_pretrained(model_dir, safe_serialization=True)


def peft_worker(args):
    """One PEFT run (in its own process): prints one JSON line RESULT {...}."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    device = "cpu" if args.dry_cpu else "cuda"
    if args.make_model:
        make_model(args, SHAPES[args.shape], args.model_dir, device)
        return
    kw = dict(attn_implementation="sdpa")
    try:
        model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.bfloat16, **kw)
    except TypeError:  # transformers < 4.56 names it torch_dtype
        model = AutoModelForCausalLM.from_pretrained(args.model_dir, torch_dtype=torch.bfloat16, **kw)
    model.to(device=device, dtype=torch.bfloat16)
    model = get_peft_model(model, LoraConfig(r=args.r, lora_alpha=args.alpha, lora_dropout=args.dropout,
                                             target_modules=["c_attn"], fan_in_fan_out=True,
                                             task_type="CAUSAL_LM"))
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01, fused=True)
    except (RuntimeError, TypeError) as e:  # no fused kernel on this device (CPU dry runs)
        log("note: fused AdamW unavailable (%s); using the default" % e)
        opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    ids = json.load(open(args.ids))
    rng = random.Random(args.seed)
    order = list(range(len(ids)))
    rng.shuffle(order)
    n_steps = args.warmup + args.steps
    batches, step_tokens = [], []
    for s in range(n_steps):
        rows = [ids[order[(s * args.batch + i) % len(ids)]] for i in range(args.batch)]
        T = max(len(x) for x in rows)
        inp = torch.zeros(len(rows), T, dtype=torch.long)
        mask = torch.zeros(len(rows), T, dtype=torch.long)
        for i, x in enumerate(rows):
            inp[i, : len(x)] = torch.tensor(x)
            mask[i, : len(x)] = 1
        labels = inp.masked_fill(mask == 0, -100)
        batches.append((inp.to(device), mask.to(device), labels.to(device)))
        step_tokens.append(sum(len(x) for x in rows))
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    model.train()
    losses = []
    t0 = None
    for s, (inp, mask, labels) in enumerate(batches):
        if s == args.warmup:
            sync()
            t0 = time.perf_counter()
        loss = model(input_ids=inp, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.detach())
    sync()
    seconds = time.perf_counter() - t0
    tokens = sum(step_tokens[args.warmup:])
    out = {"tokens_per_s": tokens / seconds, "timed_steps": args.steps, "timed_seconds": seconds,
           "timed_tokens": tokens, "first_loss": float(losses[0]), "last_loss": float(losses[-1]),
           "trainable_params": sum(p.numel() for p in params), "torch": torch.__version__}
    if device == "cuda":
        out["max_memory_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        out["max_memory_reserved_mib"] = round(torch.cuda.max_memory_reserved() / 2**20, 1)
        out["device_name"] = torch.cuda.get_device_name()
    import peft
    import transformers
    out["peft"], out["transformers"] = peft.__version__, transformers.__version__
    print("RESULT " + json.dumps(out), flush=True)


def run_peft(args, work, model_dir):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "peft", "--model-dir", model_dir,
           "--ids", os.path.join(work, "ids.json")] + common_flags(args)
    log_path = os.path.join(work, "peft.log")
    rc, mem, secs = run_watched(cmd, dict(os.environ, PYTHONUNBUFFERED="1"), args.stage_timeout, log_path)
    result = None
    for line in open(log_path, errors="replace"):
        if line.startswith("RESULT "):
            result = json.loads(line[7:])
    if rc != 0 or result is None:
        log("PEFT run failed (exit %s); the end of %s:\n%s" % (rc, log_path, tail(log_path)))
        return {"error": "exit %s" % rc, "log_tail": tail(log_path)}
    result.update(memory=mem, wall_s=round(secs, 1))
    return result


def recipe_text(args, model_dir, work, run_dir):
    return "\n".join([
        "# written by scripts/bench_gpu.py: the peer benchmark",
        "model:", "  path: %s" % json.dumps(model_dir), "  device: %s" % ("cpu" if args.dry_cpu else "cuda"),
        "  dtype: bf16",
        "lora:", "  r: %d" % args.r, "  alpha: %s" % args.alpha, "  targets: [q, v]", "  dropout: %s" % args.dropout,
        "data:", "  train: %s" % json.dumps(os.path.join(work, "train.jsonl")), "  format: jsonl",
        "  max_length: %d" % args.max_length, "  cache_dir: %s" % json.dumps(os.path.join(work, "cache")),
        "train:", "  lr: %s" % args.lr, "  schedule: constant", "  batch_size: %d  # x %d tokens at most" % (args.batch, args.max_length),
        "  max_steps: %d  # %d warm-up + %d timed" % (args.warmup + args.steps, args.warmup, args.steps),
        "  clip_grad_norm: 1.0", "  weight_decay: 0.01", "  precision: bf16", "  seed: %d" % args.seed,
        "eval:", "  num_samples: 0",
        "output:", "  dir: %s" % json.dumps(run_dir), "  overwrite: true",
        "log:", "  every: 1", "  progress: plain", ""])


def run_ours(args, work, model_dir):
    if not args.lora_bin or not os.path.exists(args.lora_bin):
        log("ours: no lora binary at %r; skipped" % args.lora_bin)
        return {"error": "no lora binary at %r" % args.lora_bin}
    run_dir = os.path.join(work, "run-ours")
    recipe = os.path.join(work, "recipe.yaml")
    with open(recipe, "w") as f:
        f.write(recipe_text(args, model_dir, work, run_dir))
    env = dict(os.environ)
    if os.environ.get("LORA_LD_LIBRARY_PATH"):  # the bundle's libraries for lora only, never for torch
        env["LD_LIBRARY_PATH"] = os.environ["LORA_LD_LIBRARY_PATH"]
    device = "cpu" if args.dry_cpu else "cuda"
    cmd = [os.path.abspath(args.lora_bin), "train", recipe, "--device", device]
    log_path = os.path.join(work, "ours.log")
    rc, mem, secs = run_watched(cmd, env, args.stage_timeout, log_path)
    metrics = os.path.join(run_dir, "metrics.jsonl")
    steps, records = [], []
    if os.path.exists(metrics):
        records = [json.loads(l) for l in open(metrics) if l.strip()]
        steps = [s for s in records if "tokens_per_s" in s]
    peak = next((r["peak_memory_mib"] for r in records if "peak_memory_mib" in r), None)
    if rc != 0 or len(steps) < args.warmup + args.steps:
        log("ours: `lora train` failed (exit %s, %d steps logged); the end of %s:\n%s"
            % (rc, len(steps), log_path, tail(log_path)))
        return {"error": "exit %s" % rc, "log_tail": tail(log_path)}
    timed = steps[args.warmup: args.warmup + args.steps]
    prev = steps[args.warmup - 1]["elapsed_s"] if args.warmup > 0 else 0.0
    seconds = timed[-1]["elapsed_s"] - prev
    tokens = 0.0
    for s in timed:
        tokens += s["tokens_per_s"] * (s["elapsed_s"] - prev)
        prev = s["elapsed_s"]
    backend = next((l.strip() for l in open(log_path, errors="replace") if "training on" in l), "")
    profile = run_profile(args, recipe, run_dir, env, device) if args.profile_steps > 0 and not args.dry_cpu else None
    return {"profile": profile, "tokens_per_s": tokens / seconds, "timed_steps": len(timed), "timed_seconds": seconds,
            "timed_tokens": round(tokens), "first_loss": steps[0]["loss"], "last_loss": steps[-1]["loss"],
            "backend_line": backend, "memory": mem, "wall_s": round(secs, 1),
            "peak_memory_mib": round(peak, 1) if peak is not None else None}


def run_profile(args, recipe, run_dir, env, device):
    """A second, short run of ours with LORA_PROFILE=1: GPU time per op (cuda/profile.cuh), the table's lines."""
    cmd = [os.path.abspath(args.lora_bin), "train", recipe, "--device", device,
           "--set", "train.max_steps=%d" % args.profile_steps, "--set", "output.dir=%s" % (run_dir + "-profile")]
    log_path = os.path.join(os.path.dirname(run_dir), "ours-profile.log")
    rc, _, _ = run_watched(cmd, dict(env, LORA_PROFILE="1"), args.stage_timeout, log_path)
    lines = open(log_path, errors="replace").read().splitlines() if os.path.exists(log_path) else []
    start = next((i for i, l in enumerate(lines) if l.startswith("CUDA op profile")), None)
    if rc != 0 or start is None:
        log("ours: the profile run failed (exit %s); the end of %s:\n%s" % (rc, log_path, tail(log_path)))
        return None
    table = lines[start:]
    end = next((i for i, l in enumerate(table) if l.strip().startswith("total")), len(table) - 1)
    table = table[:end + 1]
    log("ours: GPU time per op over %d steps (%d warm-up steps included):\n%s"
        % (args.profile_steps, min(args.warmup, args.profile_steps), "\n".join(table)))
    return table


# ---------------------------------------------------------------- driver

def common_flags(args):
    flags = ["--shape", args.shape, "--r", str(args.r), "--alpha", str(args.alpha), "--dropout",
             str(args.dropout), "--lr", str(args.lr), "--batch", str(args.batch), "--warmup",
             str(args.warmup), "--steps", str(args.steps), "--seed", str(args.seed), "--positions",
             str(args.positions)]
    return flags + (["--dry-cpu"] if args.dry_cpu else [])


def gpu_name():
    try:
        q = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "-i", "0"],
                           capture_output=True, text=True, timeout=20)
        return q.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def peak_flops(name, override):
    if override:
        return override * 1e12, "--peak-tflops"
    if name and "PCIe" in name and "H100" in name:
        return PEAKS["pcie"], "H100 PCIe dense bf16"
    return PEAKS["default"], "H100 SXM dense bf16 (the H200's is the same)"


def fmt(v, f="%.1f"):
    return "-" if v is None else f % v


def report(res):
    p, o = res["peft"], res["ours"]
    rows = [("tokens/s", "tokens_per_s", "%.0f"), ("MFU %", "mfu_pct", "%.1f")]
    log("\n== %s, %s lengths, batch %d, r %d, %s (%s)" % (res["shape"], res["lengths"], res["batch"], res["r"],
                                                       res["gpu"], res["peak_note"]))
    log("%-34s %14s %14s %10s" % ("", "PEFT", "lora", "lora/PEFT"))
    for label, key, f in rows:
        a, b = p.get(key), o.get(key)
        log("%-34s %14s %14s %10s" % (label, fmt(a, f), fmt(b, f), fmt(b / a if a and b else None, "%.2f")))
    pm, om = p.get("memory") or {}, o.get("memory") or {}
    a, b = pm.get("peak_used_delta_mib"), om.get("peak_used_delta_mib")
    log("%-34s %14s %14s %10s" % ("peak device memory MiB (poller)", fmt(a), fmt(b), fmt(b / a if a and b else None, "%.2f")))
    a2, b2 = p.get("max_memory_allocated_mib"), o.get("peak_memory_mib")
    log("%-34s %14s %14s %10s" % ("allocator peak MiB (own figure)", fmt(a2), fmt(b2), fmt(b2 / a2 if a2 and b2 else None, "%.2f")))
    log("%-34s %14s %14s" % ("loss first -> last", "%s -> %s" % (fmt(p.get("first_loss"), "%.3f"), fmt(p.get("last_loss"), "%.3f")),
                             "%s -> %s" % (fmt(o.get("first_loss"), "%.3f"), fmt(o.get("last_loss"), "%.3f"))))
    for side, r in (("PEFT", p), ("lora", o)):
        if r.get("error") == "not run":
            log("%s: not run (--only)" % side)
        elif "error" in r:
            log("%s: FAILED (%s)" % (side, r["error"]))


def summarize(paths, out):
    """One line per result file, and all of them in one JSON list."""
    results = [json.load(open(p)) for p in paths]
    log("\n== summary: lora against PEFT (%s)" % (results[0].get("gpu") if results else "-"))
    log("%-14s %11s %11s %7s %9s %9s %7s %7s %7s" % ("set", "PEFT tok/s", "lora tok/s", "ratio", "PEFT MiB",
                                                    "lora MiB", "ratio", "MFU P%", "MFU l%"))
    for r in results:
        p, o = r["peft"], r["ours"]
        pm = (p.get("memory") or {}).get("peak_used_delta_mib")
        om = (o.get("memory") or {}).get("peak_used_delta_mib")
        log("%-14s %11s %11s %7s %9s %9s %7s %7s %7s" % (
            "%s/%s" % (r["shape"], r["lengths"]), fmt(p.get("tokens_per_s"), "%.0f"), fmt(o.get("tokens_per_s"), "%.0f"),
            fmt(r.get("ratio_tokens_per_s"), "%.2f"), fmt(pm, "%.0f"), fmt(om, "%.0f"),
            fmt(r.get("ratio_peak_memory"), "%.2f"), fmt(p.get("mfu_pct")), fmt(o.get("mfu_pct"))))
    log("targets (Medium/fixed): tokens/s ratio >= 2, memory ratio <= 0.6, lora MFU >= 40%")
    if out:
        with open(out, "w") as f:
            json.dump(results, f, indent=1)
        log("summary written to %s" % out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lora-bin", help="the lora executable")
    ap.add_argument("--work", default="/tmp/lora-bench", help="scratch directory (model, data, runs)")
    ap.add_argument("--out", help="results JSON file")
    ap.add_argument("--shape", default="medium", choices=sorted(SHAPES))
    ap.add_argument("--lengths", default="fixed", choices=["fixed", "e2e"])
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    ap.add_argument("--steps", type=int, default=20, help="timed steps")
    ap.add_argument("--r", type=int, default=4)
    ap.add_argument("--alpha", type=float, default=32.0)
    ap.add_argument("--dropout", type=float, default=0.1, help="LoRA dropout (the paper's E2E setting)")
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--positions", type=int, default=POSITIONS)
    ap.add_argument("--tokenizer", default="auto", choices=["auto", "gpt2", "minimal"])
    ap.add_argument("--tokenizer-src", help="folder with encoder.json + vocab.bpe (default: ../shared/data/gpt2)")
    ap.add_argument("--peak-tflops", type=float, help="override the dense bf16 peak")
    ap.add_argument("--stage-timeout", type=int, default=300, help="seconds for each side's run")
    ap.add_argument("--only", choices=["peft", "ours"], help="run one side only")
    ap.add_argument("--profile-steps", type=int, default=0,
                    help="then run ours again for this many steps with LORA_PROFILE=1 (GPU time per op)")
    ap.add_argument("--dry-cpu", action="store_true", help="tiny model, 2 steps, on the CPU: checks the code paths")
    ap.add_argument("--summarize", nargs="+", metavar="JSON", help="summarise result files (with --out: combined)")
    ap.add_argument("--worker", choices=["peft"], help=argparse.SUPPRESS)
    ap.add_argument("--make-model", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", help=argparse.SUPPRESS)
    ap.add_argument("--ids", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.dry_cpu:
        args.shape, args.batch, args.max_length, args.warmup, args.steps = "tiny", 2, 64, 1, 1
        args.positions = 128
    if args.worker:
        return peft_worker(args)
    if args.summarize:
        return summarize(args.summarize, args.out)
    if args.tokenizer_src is None:
        args.tokenizer_src = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                           "..", "..", "shared", "data", "gpt2"))
    shape = SHAPES[args.shape]
    work = os.path.abspath(args.work)
    model_dir = os.path.join(work, "model-%s" % args.shape)
    os.makedirs(work, exist_ok=True)
    rng = random.Random(args.seed)
    name = None if args.dry_cpu else gpu_name()
    peak, peak_note = peak_flops(name, args.peak_tflops)
    log("bench_gpu: %s shape %s, %s lengths, work %s" % (name or "no GPU", shape, args.lengths, work))

    if not any(os.path.exists(os.path.join(model_dir, f)) for f in ("model.safetensors", "model.safetensors.index.json")):
        t0 = time.time()
        os.makedirs(model_dir, exist_ok=True)
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", "peft", "--make-model",
               "--model-dir", model_dir] + common_flags(args)
        try:
            rc = subprocess.run(cmd, timeout=args.stage_timeout).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
        if rc != 0:
            log("error: making the model failed (exit %s)" % rc)
            return 1
        log("model written to %s in %.0f s" % (model_dir, time.time() - t0))
    encode, eos, words, tok_kind = prepare_tokenizer(model_dir, args, rng)
    n_examples = args.batch * (args.warmup + args.steps) + 3 * args.batch
    lens = make_dataset(work, encode, eos, words, n_examples, args.lengths, args.max_length, rng)
    log("tokenizer %s; %d examples, %d to %d tokens (mean %.1f)" % (tok_kind, len(lens), min(lens), max(lens),
                                                                   sum(lens) / len(lens)))
    d = shape["n_embd"]
    fpt_ours = flops_per_token(shape, lens, args.r, [(d, d), (d, d)])
    fpt_peft = flops_per_token(shape, lens, args.r, [(d, 3 * d)])

    peft_res = run_peft(args, work, model_dir) if args.only != "ours" else {"error": "not run"}
    ours_res = run_ours(args, work, model_dir) if args.only != "peft" else {"error": "not run"}
    for r, fpt in ((peft_res, fpt_peft), (ours_res, fpt_ours)):
        if r.get("tokens_per_s"):
            r["flops_per_token"] = fpt
            r["mfu_pct"] = 100.0 * r["tokens_per_s"] * fpt / peak
    res = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "gpu": name or peft_res.get("device_name"),
           "peak_flops": peak, "peak_note": peak_note, "shape": args.shape, "config": shape, "vocab": VOCAB,
           "lengths": args.lengths, "max_length": args.max_length, "batch": args.batch, "r": args.r,
           "alpha": args.alpha, "dropout": args.dropout, "warmup_steps": args.warmup, "timed_steps": args.steps,
           "tokenizer": tok_kind, "mean_tokens": sum(lens) / len(lens), "peft": peft_res, "ours": ours_res,
           "flops_note": "PEFT adapts c_attn (q, k, v: one (3d,r)(r,d) adapter), ours q and v (two (d,r)(r,d)); "
                         "equal FLOPs and parameter counts by the issue's formula",
           "command": " ".join(sys.argv)}
    if peft_res.get("tokens_per_s") and ours_res.get("tokens_per_s"):
        res["ratio_tokens_per_s"] = ours_res["tokens_per_s"] / peft_res["tokens_per_s"]
        a = (peft_res.get("memory") or {}).get("peak_used_delta_mib")
        b = (ours_res.get("memory") or {}).get("peak_used_delta_mib")
        if a and b:
            res["ratio_peak_memory"] = b / a
    report(res)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)
        log("results written to %s" % args.out)
        if ours_res.get("profile"):
            with open(os.path.splitext(args.out)[0] + ".profile.txt", "w") as f:
                f.write("%s, %s lengths, batch %d x %d: ours, %d steps with LORA_PROFILE=1\n%s\n"
                        % (args.shape, args.lengths, args.batch, args.max_length, args.profile_steps,
                           "\n".join(ours_res["profile"])))
    failed = [r for r in (peft_res, ours_res) if "error" in r and r["error"] != "not run"]
    return 3 if failed else 0


if __name__ == "__main__":
    sys.exit(main() or 0)
