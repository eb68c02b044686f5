"""Benchmarks (never tests): measured side by side in one process, printed as ratios against a baseline.

    unlearn bench toy [--quick] [--members 8,32,128] [--set key=value ...] [--show-config] [--out FILE]
    unlearn bench llm [--quick] [--model llama-100m-shape] [--lora 16] [--set key=value ...] [--out FILE]

Each is configured by a frozen dataclass (``ToyBench``, ``LLMBench``; ``--quick`` starts from ``QUICK`` /
``QUICK_LLM``), which the results record under "config".

``toy``: M unlearning runs of one toy model trained as one ensemble (``unlearn.ensemble``; the logistic head
holds its members natively) against the baseline, a loop of single runs of the same settings. Both sides run
the project's own code paths: ``sims.logistic.unlearn`` and ``sims.markov.unlearn_runs`` / ``unlearn_run``.
A single run's speed does not depend on M, so the loop is timed on ``min(M, loop_runs)`` runs and its rate
(runs x steps per second) stands for all M; the ensemble is timed at every M. The achieved throughput is the
ensemble's matmul FLOPs (counted by ``torch.utils.flop_counter.FlopCounterMode`` over one run of the same call:
matmuls, batched matmuls and attention; elementwise work is not counted) per second, as a fraction of this
machine's float32 (float64 for the logistic model, which trains in float64) matmul rate measured on large
square products in the same process.

``llm``: NPO and NPO+KL steps on one Llama-shaped model with the ``cached`` (NPO) and ``adapter`` (NPO+KL,
LoRA) references of ``unlearn.reference`` against the ``copy`` baseline, and NPO cached vs copy with full
fine-tuning; each setting runs in its own process so that its peak memory (CUDA: max allocated; CPU: peak
resident set above the process's baseline) is its own. Step time is the median over the timed steps after
warm-up; tokens per second count the trained tokens (forget, plus retain for NPO+KL). Model FLOP utilisation
is ``training_flops_per_token`` x tokens per second over this device's measured matmul rate in the working
dtype (large square products, measured in the same run). Also the time and peak memory of building a WAGLE mask
(ratio 0.8) over every weight. A setting that runs out of GPU memory is recorded (``out_of_memory``; on CUDA
also ``fits_80gib`` for every setting) and the comparisons that need it are skipped. The results record the
attention implementation that ran ("sdpa": ``torch.nn.functional.scaled_dot_product_attention``) and, under
``attention_kernels``, the kernels SDPA chose for the case's sequences (``sdpa_kernels``: flash,
memory-efficient, cuDNN or math).

Throughput options: ``tokens_per_step`` runs every case at each token batch instead (batch_size = tokens /
seq_len) and names the batch of highest MFU; ``logprob_chunk`` takes the log-probs from the hidden states in
chunks (``unlearn.logprobs.head_token_logprobs``) instead of from full logits, and the log-prob case measures the
peak memory of that step alone, both ways, at ``logprob_seq_len`` tokens per sequence; ``compile`` adds LoRA NPO
(cached) under ``torch.compile`` beside its eager step; ``profile`` keeps a table of the top kernels of each
case's last step (torch.profiler); ``cases`` runs a subset.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from unlearn.config import require_at_least_one
from unlearn.memory import peak_bytes
from unlearn.models import hf

MEMBERS = (8, 32, 128)


@dataclass(frozen=True)
class ToyBench:
    """Settings of one ``bench toy`` run; ``QUICK`` keeps it under a minute on 2 CPU cores."""

    members: tuple[int, ...] = MEMBERS
    logistic_steps: int = 200
    markov_steps: int = 40
    loop_runs: int = 8
    repeats: int = 2  # best of: the first call of a shape pays one-off allocation costs
    device: str = "cpu"

    def __post_init__(self):
        if not self.members or min(self.members) < 1:
            raise ValueError(f"members must be positive integers, got {self.members!r}")
        require_at_least_one(self, "logistic_steps", "markov_steps", "loop_runs", "repeats")


QUICK = ToyBench(members=(8, 32), logistic_steps=50, markov_steps=10, loop_runs=4, repeats=1)


def matmul_rate(dtype: torch.dtype, device: torch.device, n: int = 1024, seconds: float = 1.0) -> float:
    """Achieved FLOP/s of n x n matmuls (2 n^3 FLOPs each), best over about ``seconds`` of repeats."""
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    best, start = 0.0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        (a @ b).sum().item()
        best = max(best, 2 * n**3 / (time.perf_counter() - t0))
    return best


def training_flops_per_token(n_parameters: int, n_trainable: int, n_layer: int, width: int, seq_len: int) -> int:
    """Model FLOPs of one trained token: 2 N forward, 2 N backward to the activations and 2 N_trainable for the
    weight gradients over the N weights, plus 12 L d T for attention scores and values over a context of T
    (Chowdhery et al. 2022, PaLM, App. B): 6 N + 12 L d T in full fine-tuning, about 4 N + 12 L d T with LoRA.
    It is what the training needs, not what an implementation runs (a ``copy`` reference adds a forward,
    gradient checkpointing recomputes one), so it is the numerator of model FLOP utilisation. N counts every
    parameter, the input embedding included (~2% of a 7B Llama)."""
    return 4 * n_parameters + 2 * n_trainable + 12 * n_layer * width * seq_len


def best_time(fn: Callable[[], object], repeats: int) -> float:
    """Shortest wall time of ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def flops_of(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


# ----------------------------------------------------------------------------------------------- the toys


def logistic_case(device: torch.device, steps: int):
    """(ensemble(M), single(m)) callables on one npo-synthetic-sized logistic world (d 16, 128 features, 200
    forget / 1000 retain samples; pi_ref and pi_retr random, which costs the same as pretrained): member m runs
    NPO+RT with beta and lr spread over the sweep ranges, full batch, float64 (sims.logistic)."""
    from sims import logistic
    from sims.logistic import Run
    from unlearn.models.logistic import random_feature_matrix
    from unlearn.objectives import MethodParams
    from unlearn.rng import generator

    g = generator(0, "bench", "logistic")
    world = logistic.sample_data(1.0, 16, 200, 1000, 1000, g).featurize(random_feature_matrix(16, 128, g)).to(device)
    theta_ref, theta_retr = (0.1 * torch.randn(1, 128, generator=g, dtype=torch.float64).to(device) for _ in range(2))

    def run(m: int) -> Run:
        return Run(f"run{m}", "NPO+RT", MethodParams(beta=0.05 * (1 + m % 20)), lr=0.01 * (1 + m % 7))

    def train(runs):
        return logistic.unlearn(runs, [world], theta_ref, theta_retr, steps, eval_every=0, progress=False)

    return (lambda M: train([run(m) for m in range(M)])), (lambda m: train([run(m)]))


def markov_case(device: torch.device, steps: int):
    """(ensemble(M), single(m)) callables: the Markov transformer at the paper's size (4 layers, d 128),
    randomly initialised, unlearning markov-length's mixture of Forget1 (length 20) and Forget2 (length 5)
    sequences, 200 in all, in batches of 4, member m running NPO or SimNPO with its own beta and batch order, no
    evaluation (sims.markov). Each single run pays its own reference pass over the forget set, as a loop of runs
    does; at this size it costs about a tenth of the run's 40 training steps."""
    from sims import markov
    from unlearn.models.transformer import Transformer
    from unlearn.objectives import MethodParams
    from unlearn.rng import generator

    world_cfg = markov.MarkovWorldConfig(seed=0, n_retain=400, n_forget1=125, n_forget2=125)
    world = markov.make_world(world_cfg)
    model = Transformer(markov.model_config(world_cfg, markov.PretrainConfig()), generator(0, "bench", "init"))
    model.to(device)
    steps = min(steps, len(world.forget_set()) // 4)

    def settings(m: int):
        method = ("NPO", "SimNPO")[m % 2]
        return method, MethodParams(beta=(0.1, 4.0)[m % 2] * (1 + m % 5)), generator(0, "bench", "order", m)

    def no_eval(model, step):
        return {}

    def ensemble(M):
        methods, params, gens = zip(*(settings(m) for m in range(M)), strict=True)
        return markov.unlearn_runs(model, methods, params, world, gens, steps=steps, evaluate=no_eval,
                                   progress=False)

    def single(m):
        method, params, g = settings(m)
        return markov.unlearn_run(copy.deepcopy(model), method, params, world, steps=steps, generator=g,
                                  evaluate=no_eval, progress=False)

    return ensemble, single, steps


def bench_toy(cfg: ToyBench, device: torch.device, report: Callable[[str], None] = print) -> dict:
    """Run the toy benchmark (module docstring) and return its flat results."""
    results: dict[str, float | int | str] = {}
    peaks = {dtype: matmul_rate(dtype, device) for dtype in (torch.float32, torch.float64)}
    results["matmul_gflops.float32"] = peaks[torch.float32] / 1e9
    results["matmul_gflops.float64"] = peaks[torch.float64] / 1e9
    report(f"matmul rate: float32 {peaks[torch.float32] / 1e9:.1f} GFLOP/s, "
           f"float64 {peaks[torch.float64] / 1e9:.1f} GFLOP/s ({device})")
    logistic_ensemble, logistic_single = logistic_case(device, cfg.logistic_steps)
    markov_ensemble, markov_single, markov_steps = markov_case(device, cfg.markov_steps)
    if markov_steps < cfg.markov_steps:
        report(f"markov: {markov_steps} steps, one pass over the forget set in batches of 4 (markov_steps "
               f"{cfg.markov_steps} asked for more)")
    cases = {"logistic": (logistic_ensemble, logistic_single, cfg.logistic_steps, torch.float64),
             "markov": (markov_ensemble, markov_single, markov_steps, torch.float32)}
    header = (f"{'model':<9} {'members':>7} {'loop runs*steps/s':>18} {'ensemble runs*steps/s':>22} "
              f"{'speedup':>8} {'matmul GFLOP/s':>15} {'of peak':>8}")
    report(header)
    for name, (ensemble, single, steps, dtype) in cases.items():
        results[f"{name}.steps"] = steps
        loop_runs = min(cfg.loop_runs, max(cfg.members))
        loop_s = best_time(lambda: [single(m) for m in range(loop_runs)], cfg.repeats)  # noqa: B023
        loop_rate = loop_runs * steps / loop_s
        results[f"{name}.loop.runs_steps_per_s"] = loop_rate
        for M in cfg.members:
            ens_s = best_time(lambda: ensemble(M), cfg.repeats)  # noqa: B023
            rate = M * steps / ens_s
            flops = flops_of(lambda: ensemble(M))  # noqa: B023
            achieved = flops / ens_s
            key = f"{name}.members={M}"
            results.update({f"{key}.speedup": rate / loop_rate, f"{key}.ensemble.runs_steps_per_s": rate,
                            f"{key}.matmul_gflops": achieved / 1e9, f"{key}.fraction_of_peak": achieved / peaks[dtype]})
            report(f"{name:<9} {M:>7} {loop_rate:>18.1f} {rate:>22.1f} {rate / loop_rate:>7.1f}x "
                   f"{achieved / 1e9:>15.2f} {achieved / peaks[dtype]:>8.1%}")
    return results


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's (what a benchmark's ratios were measured on)."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()


# ------------------------------------------------------------------------------------------------ bench llm


@dataclass(frozen=True)
class LLMBench:
    """Settings of one ``bench llm`` run. ``QUICK_LLM`` takes about a minute on 2 CPU cores (63 s measured)."""

    model: str = "llama-100m-shape"
    lora_rank: int = 16
    batch_size: int = 2
    seq_len: int = 256
    steps: int = 3
    warmup: int = 1
    dtype: str = "float32"
    gradient_checkpointing: bool = False
    full_finetuning: bool = True  # also NPO cached vs copy without LoRA (AdamW on every weight)
    eval_questions: int = 16  # TOFU evaluation throughput on this many forget questions (0: not measured)
    tokens_per_step: tuple[int, ...] = ()  # token batches to sweep, each a multiple of seq_len (): batch_size only
    logprob_chunk: int = 0  # response positions per log-prob chunk (unlearn.logprobs.head_token_logprobs); 0: logits
    fused_logprobs: bool = False  # log-probs by cut-cross-entropy's kernel (CUDA, bf16; the gpu extra)
    logprob_seq_len: int = 2048  # sequence length of the log-prob memory case (0: not measured)
    compile: bool = False  # also run LoRA NPO (cached) under torch.compile ("npo.compiled"), against its eager step
    cases: tuple[str, ...] = ()  # labels of CASES (and "mask.wagle") to run; (): all of them
    profile: bool = False  # profile each case's last step: its top kernels by time, in the case's "profile"
    device: str = "cpu"

    def __post_init__(self):  # checked here, before any case starts its process
        hf.check_model(self.model)
        if self.dtype not in hf.DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; valid: {', '.join(hf.DTYPES)}")
        require_at_least_one(self, "lora_rank", "batch_size", "seq_len", "steps")
        for key in ("warmup", "eval_questions", "logprob_chunk", "logprob_seq_len"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)}")
        unknown = set(self.cases) - {c[0] for c in CASES} - {"mask.wagle"}
        if unknown:
            valid = ", ".join([c[0] for c in CASES] + ["mask.wagle"])
            raise ValueError(f"unknown case {sorted(unknown)[0]!r}; valid: {valid}")
        if self.fused_logprobs and self.logprob_chunk:
            raise ValueError("fused_logprobs and logprob_chunk are two ways to the same log-probs; give one")
        if self.fused_logprobs and self.dtype != "bf16":
            raise ValueError(f"fused_logprobs runs a bf16 kernel; give --dtype bf16 (got {self.dtype})")
        if self.compile and self.tokens_per_step:
            raise ValueError("compile applies to the comparison at batch_size, not to a tokens_per_step sweep")
        for n in self.tokens_per_step:
            if n < self.seq_len or n % self.seq_len:
                raise ValueError(f"tokens_per_step {n} is not a positive multiple of seq_len {self.seq_len}")


CASES = (  # (label, method, reference, LoRA?)
    ("npo.cached", "NPO", "cached", True), ("npo.copy", "NPO", "copy", True),
    ("npo+kl.adapter", "NPO+KL", "adapter", True), ("npo+kl.copy", "NPO+KL", "copy", True),
    ("full.npo.cached", "NPO", "cached", False), ("full.npo.copy", "NPO", "copy", False),
)
QUICK_LLM = LLMBench(model="llama-20m-shape", batch_size=2, seq_len=128, steps=2)


def _reset_peak(device: torch.device) -> int:
    """Start a new peak-memory window; returns the memory in use now (CUDA: allocated; CPU: resident set, whose
    high-water mark Linux resets on writing 5 to /proc/self/clear_refs)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))


def llm_case(cfg: LLMBench, method: str, reference: str, lora: bool, device: torch.device) -> dict:
    """One setting in this process: build the model, the reference and random token batches (a quarter prompt,
    the rest response), train steps + warmup AdamW steps through ``unlearn.train``; time each step and take the
    peak memory (CUDA: max allocated; CPU: the process's peak RSS above what it held before the model)."""
    import peft  # noqa: F401  (imported before the baseline, so that no setting pays for the imports)
    import transformers  # noqa: F401

    from unlearn.data import TokenSet
    from unlearn.losses import unlearning_losses
    from unlearn.objectives import MethodParams
    from unlearn.reference import make_reference
    from unlearn.train import TrainConfig, forward_precision, train

    before = peak_bytes(device) if device.type == "cpu" else 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    lora_spec = hf.LoraSpec(cfg.lora_rank, 2.0 * cfg.lora_rank) if lora else None
    spec = hf.ModelSpec(cfg.model, dtype=cfg.dtype, device=str(device), lora=lora_spec,
                        gradient_checkpointing=cfg.gradient_checkpointing)
    model = hf.load_model(spec)
    g = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    B, T = cfg.batch_size, cfg.seq_len
    ids = torch.randint(0, vocab, (2 * B, T + 1), generator=g)
    mask = torch.zeros(2 * B, T, dtype=torch.bool)
    mask[:, T // 4:] = True
    data = TokenSet(ids[:, :-1], torch.ones(2 * B, T, dtype=torch.bool), ids[:, 1:], mask).to(device)
    forget, retain = data.take(slice(0, B)), data.take(slice(B, 2 * B))
    if reference == "mask":  # WAGLE mask construction: two summed-gradient passes, the scores, the threshold
        return mask_case(model, forget, retain, before, device)
    if reference == "eval":
        return eval_case(cfg, model, device)
    if reference == "logprobs":
        return logprob_case(cfg, model, before, device)
    precision = "float32" if cfg.dtype == "float32" else "bf16-autocast"
    path = {"logprob_chunk": cfg.logprob_chunk or None, "fused_logprobs": cfg.fused_logprobs}
    with forward_precision(device, precision):  # a cached reference as the loss computes log pi
        kernels = sdpa_kernels(lambda: hf.decoder_and_head(model)[0](forget.input_ids[:1], use_cache=False))
        ref = make_reference(reference, model, forget, **path)
    losses = unlearning_losses(method, MethodParams(beta=0.1), forget, retain, ref, **path)
    if cfg.compile:
        hf.compile_in_place(model)
    stamps = []

    steps = cfg.warmup + cfg.steps
    profiler = step_profiler(device) if cfg.profile else None

    def stamp(m, step):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        stamps.append(time.perf_counter())
        if profiler is not None and step in (steps - 1, steps):  # around the last step
            profiler.start() if step == steps - 1 else profiler.stop()
        return {}

    tc = TrainConfig(steps=steps, lr=1e-5, optimizer="adamw", eval_every=1, device=str(device),
                     precision=precision, progress=False, name=method)
    index = torch.arange(B, device=device)
    train(model, losses, lambda step: [(index, index, None)], tc, evaluate=stamp)
    times = [b - a for a, b in zip(stamps[cfg.warmup:-1], stamps[cfg.warmup + 1:], strict=True)]
    step_s = sorted(times)[len(times) // 2]
    n_params, n_trainable = hf.n_parameters(model), hf.n_parameters(model, trainable_only=True)
    trained_tokens = B * T + (B * T if method.endswith("+KL") else 0)
    per_token = training_flops_per_token(n_params, n_trainable, model.config.num_hidden_layers,
                                         model.config.hidden_size, T)
    found = {"peak_bytes": peak_bytes(device) - before, "step_s": step_s, "tokens_per_s": trained_tokens / step_s,
             "model_flops_per_s": per_token * trained_tokens / step_s, "n_parameters": n_params,
             "trainable_parameters": n_trainable, "attention": _attention_kernel(model),
             "attention_kernels": kernels,
             "param_bytes": sum(p.numel() * p.element_size() for p in model.parameters())}
    if profiler is not None:
        sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        found["profile"] = profiler.key_averages().table(sort_by=sort, row_limit=PROFILE_ROWS)
    return found


PROFILE_ROWS = 25


def step_profiler(device: torch.device):
    """A torch.profiler over the CPU (and CUDA) activity of one training step, started and stopped by hand."""
    from torch.profiler import ProfilerActivity, profile

    return profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else []))


def _attention_kernel(model) -> str:
    """The attention implementation the model runs ("sdpa": torch's scaled_dot_product_attention, which picks the
    flash, memory-efficient or math kernel for the device and dtype; "eager": explicit matmuls and softmax)."""
    return str(getattr(model.config, "_attn_implementation", "unknown"))


SDPA_OP = "aten::_scaled_dot_product_"


def sdpa_kernels(forward: Callable[[], object]) -> list[str]:
    """The kernels that scaled_dot_product_attention chose in one call of ``forward``: the names of the aten ops
    that torch's profiler saw, less the ``aten::_scaled_dot_product_`` prefix. On CUDA ``flash_attention``,
    ``efficient_attention`` or ``cudnn_attention``; on the CPU ``flash_attention_for_cpu``; ``attention_math``
    for the unfused fallback (matmuls and a softmax, memory O(T^2) per head). [] when nothing called SDPA (eager
    attention). The choice depends on the device, the dtype, the head size and the mask, so a case probes one
    sequence of its own batch (no padding, as in training) through the decoder under its own precision, without
    gradients or a cache: one sequence's activations, a layer at a time, inside the case's peak-memory window."""
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
        forward()
    return sorted({e.key.removeprefix(SDPA_OP) for e in prof.key_averages()
                   if e.key.startswith(SDPA_OP) and not e.key.endswith("_backward")})


def logprob_case(cfg: LLMBench, model, before: int, device: torch.device) -> dict:
    """Peak memory of one log-prob step alone: per-token log-probs of batch_size x logprob_seq_len response tokens
    from random final hidden states through the model's head, and their backward (to the hidden states and the
    head), by the logits path (logprob_chunk 0: B x T x V logits and their log-softmax), in chunks
    (``unlearn.logprobs.head_token_logprobs``) or fused (``fused_head_token_logprobs``). The model's other layers
    play no part."""
    from unlearn.logprobs import fused_head_token_logprobs, head_token_logprobs, token_logprobs

    _, head = hf.decoder_and_head(model)
    g = torch.Generator().manual_seed(0)

    def step(B: int, T: int) -> None:
        hidden = torch.randn(B, T, head.shape[1], generator=g).to(device, head.dtype).requires_grad_()
        labels = torch.randint(0, head.shape[0], (B, T), generator=g).to(device)
        mask = torch.ones(B, T, dtype=torch.bool, device=device)
        if cfg.fused_logprobs:
            token_logp, _ = fused_head_token_logprobs(hidden, head, labels, mask)
        elif cfg.logprob_chunk:
            token_logp, _ = head_token_logprobs(hidden, head, labels, mask, chunk=cfg.logprob_chunk)
        else:
            token_logp, _ = token_logprobs(hidden @ head.T, labels, mask)
        token_logp.sum().backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    step(1, 8)  # one-off costs of the first call (thread pools, kernels) stay out of the measured window
    start = _reset_peak(device)
    t0 = time.perf_counter()
    step(cfg.batch_size, cfg.logprob_seq_len)
    return {"peak_bytes": peak_bytes(device) - start, "seconds": time.perf_counter() - t0,
            "tokens": cfg.batch_size * cfg.logprob_seq_len, "path": logprob_path(cfg)}


def mask_case(model, forget, retain, before: int, device: torch.device) -> dict:
    """Time and peak memory of ``wagle:0.8`` masks (``unlearn.attribution``) on ``model``."""
    from unlearn import attribution

    def gradients():
        return attribution.nll_gradients(model, forget), attribution.nll_gradients(model, retain)

    start = time.perf_counter()
    attribution.masks_for("wagle:0.8", model, lambda kind: attribution.scores(kind, model, gradients=gradients))
    return {"peak_bytes": peak_bytes(device) - before, "seconds": time.perf_counter() - start,
            "param_bytes": sum(p.numel() * p.element_size() for p in model.parameters())}


EVAL_NEW_TOKENS = 32  # greedy answer length of the evaluation case (TOFU's is up to 200)


def eval_case(cfg: LLMBench, model, device: torch.device) -> dict:
    """TOFU evaluation throughput (``unlearn.metrics.tofu``): the answer, paraphrase and perturbed answers of
    ``eval_questions`` generated forget questions scored with teacher forcing (tokens read per second), and greedy
    answers of EVAL_NEW_TOKENS tokens (questions answered per second), bytes as tokens, batches of batch_size."""
    from unlearn import tofu
    from unlearn.data import Example, byte_tokenizer, tokenize_examples
    from unlearn.metrics.generate import answer_nll, greedy_answers
    from unlearn.metrics.tofu import TofuEvalSettings
    from unlearn.train import forward_precision

    files = tofu.tofu_like(tofu.TofuLikeConfig(n_authors=max(10, cfg.eval_questions), n_retain_perturbed=1))
    questions = [tofu.question_of(r, "bench", True) for r in files["forget10_perturbed.json"]][: cfg.eval_questions]
    pairs = [(q.question, a) for q in questions for a in (q.answer, q.paraphrased, *q.perturbed)]
    tokenizer = byte_tokenizer()
    settings = TofuEvalSettings(batch_size=cfg.batch_size, max_new_tokens=EVAL_NEW_TOKENS)
    tokens = int(tokenize_examples([Example(q, a) for q, a in pairs], tokenizer, settings.max_length,
                                   progress=False).attention_mask.sum())
    model.eval()
    timed = {}
    with forward_precision(device, "float32" if cfg.dtype == "float32" else "bf16-autocast"):
        for name, fn in (("score", lambda: answer_nll(model, tokenizer, *zip(*pairs, strict=True), settings)),
                         ("generate", lambda: greedy_answers(model, tokenizer, [q.question for q in questions],
                                                             settings))):
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            timed[name] = time.perf_counter() - start
    return {"scored_tokens_per_s": tokens / timed["score"], "answers_per_s": len(questions) / timed["generate"],
            "scored_tokens": tokens, "questions": len(questions), "new_tokens": EVAL_NEW_TOKENS}


def case_main(payload: str) -> None:
    """One case's process: print ``llm_case``'s result as JSON, or {"out_of_memory": true, "error": ...} when
    the device runs out of memory (a setting that does not fit is a result, not a failure of the benchmark)."""
    import json

    a = json.loads(payload)
    try:
        result = llm_case(LLMBench(**a["cfg"]), a["method"], a["reference"], a["lora"], torch.device(a["device"]))
    except torch.OutOfMemoryError as error:
        result = {"out_of_memory": True, "error": str(error).splitlines()[0]}
    print(json.dumps(result))


def _case_in_subprocess(cfg: LLMBench, case: tuple, device: torch.device) -> dict:
    """``llm_case`` in a fresh Python process (``case_main``), so that each setting's peak memory is its own."""
    import json
    import subprocess
    import sys

    _, method, reference, lora = case
    payload = json.dumps({"cfg": dataclasses.asdict(cfg), "method": method, "reference": reference, "lora": lora,
                          "device": str(device)})
    code = "import sys; from recipes import bench; bench.case_main(sys.argv[1])"
    env = dict(os.environ)
    if reference == "logprobs":  # large blocks from mmap, returned to the system when freed: the CPU's resident
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"  # set then follows the live tensors (glibc keeps heap memory)
    out = subprocess.run([sys.executable, "-c", code, payload], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"bench llm case {case[0]} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _measured(cfg: LLMBench, case: tuple, label: str, peak: float, device: torch.device,
              report: Callable[[str], None], width: int = 18) -> dict:
    """One case in its own process, its MFU against ``peak``, reported as a row (and its profile, if taken)."""
    r = _case_in_subprocess(cfg, case, device)
    if not r.get("out_of_memory"):
        r["mfu"] = r["model_flops_per_s"] / peak
    report(_row(label, r, width))
    if "profile" in r:
        report(f"{label}: the top kernels of its last step\n{r['profile']}")
    return r


def _row(label: str, r: dict, width: int = 18) -> str:
    if r.get("out_of_memory"):
        return f"{label:<{width}} {'out of memory':>36}"
    return (f"{label:<{width}} {r['peak_bytes'] / 2**20:>10.0f} {r['step_s']:>8.3f} {r['tokens_per_s']:>9.1f} "
            f"{r['mfu']:>6.1%}")


def bench_llm(cfg: LLMBench, device: torch.device, report: Callable[[str], None] = print) -> dict:
    """Every selected case of CASES side by side, each in its own process: ratios against the ``copy`` reference,
    or, with ``tokens_per_step``, every case at every token batch (``token_sweep``); then the WAGLE mask, TOFU
    evaluation and log-prob memory cases."""
    cases = [c for c in CASES if (cfg.full_finetuning or c[3]) and (not cfg.cases or c[0] in cfg.cases)]
    # the best of three one-second measurements: a shared machine's rate dips now and then (once to a third)
    peak = max(matmul_rate(hf.DTYPES[cfg.dtype], device, n=8192 if device.type == "cuda" else 1024) for _ in range(3))
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the settings run in their own processes: leave them this one's memory
    report(f"matmul rate ({cfg.dtype}, {device}): {peak / 1e12:.2f} TFLOP/s, the MFU denominator")
    results: dict = {"matmul_tflops": peak / 1e12, "logprob_path": logprob_path(cfg, detail=True)}
    cases_run: dict = {}
    if cfg.tokens_per_step:
        results.update(token_sweep(dataclasses.replace(cfg, compile=False), cases, peak, device, cases_run, report))
    else:
        results.update(reference_comparison(cfg, cases, peak, device, cases_run, report))
    fitted = [r for r in cases_run.values() if not r.get("out_of_memory")]
    if fitted:
        results["n_parameters"], results["attention"] = fitted[0]["n_parameters"], fitted[0].get("attention")
        results["attention_kernels"] = fitted[0].get("attention_kernels")
        report(f"attention: {results['attention']}, kernels {', '.join(results['attention_kernels'] or ['none'])}")
    with_lora = [r for label, r in cases_run.items() if not label.startswith("full.") and r in fitted]
    if with_lora:
        results["lora.trainable_parameters"] = with_lora[0]["trainable_parameters"]
    if not cfg.cases or "mask.wagle" in cfg.cases:
        cases_run["mask.wagle"] = mask = _case_in_subprocess(cfg, ("mask.wagle", "NPO", "mask", False), device)
        results["mask.wagle.out_of_memory"] = bool(mask.get("out_of_memory"))
        if mask.get("out_of_memory"):
            report("WAGLE mask (ratio 0.8) on every weight: out of memory")
        else:
            results["mask.wagle.seconds"] = mask["seconds"]
            results["mask.wagle.peak_over_model_bytes"] = mask["peak_bytes"] / mask["param_bytes"]
            report(f"WAGLE mask (ratio 0.8) on every weight: {mask['seconds']:.1f} s, peak memory "
                   f"{results['mask.wagle.peak_over_model_bytes']:.1f} x the model's weights")
    if cfg.eval_questions:
        cases_run["eval.tofu"] = found = _case_in_subprocess(cfg, ("eval.tofu", "NPO", "eval", False), device)
        results.update({f"eval.tofu.{k}": found[k] for k in ("scored_tokens_per_s", "answers_per_s") if k in found})
        if "answers_per_s" in found:
            report(f"TOFU evaluation: {found['scored_tokens_per_s']:.0f} scored tokens/s, {found['answers_per_s']:.2f} "
                   f"greedy answers/s ({EVAL_NEW_TOKENS} new tokens, {found['questions']} questions)")
    if cfg.logprob_seq_len:
        results.update(logprob_memory(cfg, device, cases_run, report))
    results["cases"] = cases_run
    return results


def reference_comparison(cfg: LLMBench, cases: list[tuple], peak: float, device: torch.device, cases_run: dict,
                         report: Callable[[str], None]) -> dict:
    """Each case at batch_size x seq_len tokens (and "npo.compiled" with ``compile``): LABEL.{peak_bytes,
    tokens_per_s, mfu, out_of_memory}, the ratios PREFIX.A_vs_B.{peak_mem_ratio, step_time_ratio} of each pair
    that ran, and the bytes that the cached reference saves with full fine-tuning."""
    report(f"{'setting':<18} {'peak MiB':>10} {'step s':>8} {'tokens/s':>9} {'MFU':>6}")
    eager = dataclasses.replace(cfg, compile=False)
    for case in cases + ([("npo.compiled", "NPO", "cached", True)] if cfg.compile else []):
        cases_run[case[0]] = _measured(cfg if case[0] == "npo.compiled" else eager, case, case[0], peak, device,
                                       report)
    fitted = {label: r for label, r in cases_run.items() if not r.get("out_of_memory")}
    results: dict = {}
    for label, r in cases_run.items():
        results[f"{label}.out_of_memory"] = bool(r.get("out_of_memory"))
        results.update({f"{label}.{key}": r[key] for key in ("peak_bytes", "tokens_per_s", "mfu") if key in r})
    if device.type == "cuda":  # does the setting fit an 80 GiB GPU (A100/H100 80GB) at all?
        results.update({f"{label}.fits_80gib": label in fitted and fitted[label]["peak_bytes"] <= 80 * 2**30
                        for label in cases_run})
    pairs = [("npo", "npo.cached", "npo.copy", "cached_vs_copy"), ("npo+kl", "npo+kl.adapter", "npo+kl.copy",
                                                                     "adapter_vs_copy"),
             ("full.npo", "full.npo.cached", "full.npo.copy", "cached_vs_copy"),
             ("npo", "npo.compiled", "npo.cached", "compiled_vs_cached")]  # the last: the same step, eager
    for prefix, a, b, name in pairs:
        if a not in cases_run or b not in cases_run:
            continue
        if not (a in fitted and b in fitted):
            report(f"{prefix + '.' + name:<28} not compared: a setting ran out of memory")
            continue
        results[f"{prefix}.{name}.peak_mem_ratio"] = fitted[a]["peak_bytes"] / fitted[b]["peak_bytes"]
        results[f"{prefix}.{name}.step_time_ratio"] = fitted[a]["step_s"] / fitted[b]["step_s"]
        report(f"{prefix + '.' + name:<28} peak memory x{results[f'{prefix}.{name}.peak_mem_ratio']:.2f}, "
               f"step time x{results[f'{prefix}.{name}.step_time_ratio']:.2f}")
    if "full.npo.cached" in fitted and "full.npo.copy" in fitted:
        saved = fitted["full.npo.copy"]["peak_bytes"] - fitted["full.npo.cached"]["peak_bytes"]
        results["full.npo.saved_bytes"] = saved
        results["full.npo.saved_over_model_bytes"] = saved / fitted["full.npo.copy"]["param_bytes"]
        report(f"full fine-tuning: cached saves {saved / 2**20:.0f} MiB = "
               f"{results['full.npo.saved_over_model_bytes']:.2f} x the model's {cfg.dtype} weights")
    return results


def token_sweep(cfg: LLMBench, cases: list[tuple], peak: float, device: torch.device, cases_run: dict,
                report: Callable[[str], None]) -> dict:
    """Every case at every token batch of ``tokens_per_step`` (batch_size = tokens / seq_len), each in its own
    process: LABEL.tokens=N.{tokens_per_s, mfu, peak_bytes, out_of_memory}, and per case the batch of highest MFU
    that ran (LABEL.best_tokens_per_step, LABEL.best_mfu)."""
    results: dict = {}
    report(f"{'setting':<30} {'peak MiB':>10} {'step s':>8} {'tokens/s':>9} {'MFU':>6}")
    for case in cases:
        best = None
        for n in cfg.tokens_per_step:
            label = f"{case[0]}.tokens={n}"
            cases_run[label] = r = _measured(dataclasses.replace(cfg, batch_size=n // cfg.seq_len), case, label,
                                             peak, device, report, width=30)
            results[f"{label}.out_of_memory"] = bool(r.get("out_of_memory"))
            if not r.get("out_of_memory"):
                results.update({f"{label}.{key}": r[key] for key in ("tokens_per_s", "mfu", "peak_bytes")})
                best = max(best or (r["mfu"], n), (r["mfu"], n))
        if best is not None:
            results[f"{case[0]}.best_mfu"], results[f"{case[0]}.best_tokens_per_step"] = best
    return results


def logprob_path(cfg: LLMBench, detail: bool = False) -> str:
    """Which log-prob path a case ran: "logits", "chunked" or "fused" (with ``detail``: the chunk, or the
    kernel's package and version)."""
    if cfg.fused_logprobs:
        from unlearn.io import package_versions
        from unlearn.logprobs import FUSED_PACKAGE

        return f"fused ({FUSED_PACKAGE} {package_versions(FUSED_PACKAGE)[FUSED_PACKAGE]})" if detail else "fused"
    if cfg.logprob_chunk:
        return f"chunks of {cfg.logprob_chunk}" if detail else "chunked"
    return "logits"


def logprob_memory(cfg: LLMBench, device: torch.device, cases_run: dict, report: Callable[[str], None]) -> dict:
    """``logprob_case`` by the logits path, in chunks (``logprob_chunk``, or 1024 when it is 0) and, with
    ``fused_logprobs``, fused, each in its own process: logprobs.PATH.peak_bytes and each one's ratio to the
    logits path's, logprobs.PATH_over_logits_peak."""
    chunk = cfg.logprob_chunk or 1024
    results: dict = {"logprobs.chunk": chunk, "logprobs.tokens": cfg.batch_size * cfg.logprob_seq_len}
    paths = {"logits": dataclasses.replace(cfg, logprob_chunk=0, fused_logprobs=False),
             "chunked": dataclasses.replace(cfg, logprob_chunk=chunk, fused_logprobs=False)}
    if cfg.fused_logprobs:
        paths["fused"] = dataclasses.replace(cfg, logprob_chunk=0)
    for path, path_cfg in paths.items():
        cases_run[f"logprobs.{path}"] = r = _case_in_subprocess(path_cfg, (f"logprobs.{path}", "NPO", "logprobs",
                                                                           False), device)
        results[f"logprobs.{path}.out_of_memory"] = bool(r.get("out_of_memory"))
        if not r.get("out_of_memory"):
            results[f"logprobs.{path}.peak_bytes"] = r["peak_bytes"]
    if "logprobs.logits.peak_bytes" not in results:
        return results
    found = [f"logits path {results['logprobs.logits.peak_bytes'] / 2**20:.0f} MiB"]
    for path, what in (("chunked", f"chunks of {chunk}"), ("fused", "fused")):
        if f"logprobs.{path}.peak_bytes" in results:
            ratio = results[f"logprobs.{path}_over_logits_peak"] = (results[f"logprobs.{path}.peak_bytes"]
                                                                    / results["logprobs.logits.peak_bytes"])
            found.append(f"{what} {results[f'logprobs.{path}.peak_bytes'] / 2**20:.0f} MiB (x{ratio:.3f})")
    report(f"log-prob step, {cfg.batch_size} x {cfg.logprob_seq_len} tokens: {', '.join(found)}")
    return results
