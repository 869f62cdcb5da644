"""Training throughput: seqrl's Decision Transformer against Hugging Face's DecisionTransformerModel.

Same configuration (ReLU MLPs of 4x width, dropout 0.1 everywhere, action tanh), same random batches,
same optimiser (AdamW + gradient clipping), same loss (action MSE over real steps), same process and
thread count; the two are timed in alternating rounds and the median round counts. Two sizes: the DT
paper's (128 dims, 3 layers, 1 head, batch 64) and ODT's (512 dims, 4 layers, 4 heads, batch 256),
both with K = 20 and Hopper's dimensions. Each in fp32 and with bfloat16 autocast.

Model-FLOPs utilisation (MFU) counts the standard transformer FLOPs of one update (6 x non-embedding
parameters x tokens + 6 x layers x tokens x context x width for attention, as nanoGPT/PaLM do) the same
for both implementations, against the matmul peak measured in this run (a large square matmul in the
same dtype). seqrl skips the last block's work for tokens whose output is unused, so its MFU counts
work it does not do: it measures speed on the common scale, not arithmetic efficiency.
"""

from __future__ import annotations

import statistics
import time

import torch

from seqrl.bench.machine import git_commit, machine_info, write_result
from seqrl.errors import SeqrlError

SIZES = {
    "dt": dict(embed_dim=128, num_layers=3, num_heads=1, batch_size=64),
    "odt": dict(embed_dim=512, num_layers=4, num_heads=4, batch_size=256),
}
OBS_DIM, ACT_DIM, K = 11, 3, 20
TARGET_RATIO_CPU, TARGET_RATIO_GPU = 1.5, 4.0


def _batches(n: int, b: int, device, seed: int) -> list[tuple]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        mask = torch.ones(b, K, dtype=torch.bool)
        lengths = torch.randint(K // 2, K + 1, (b,), generator=g)   # some windows right-padded
        mask &= torch.arange(K)[None] < lengths[:, None]
        out.append(tuple(x.to(device) for x in (
            torch.randn(b, K, OBS_DIM, generator=g), torch.rand(b, K, ACT_DIM, generator=g) * 2 - 1,
            torch.randn(b, K, generator=g), torch.randint(0, 1000, (b, K), generator=g), mask)))
    return out


def _seqrl_step_fn(size: dict, device):
    from seqrl.models import DecisionTransformer

    model = DecisionTransformer(OBS_DIM, ACT_DIM, K, size["embed_dim"], size["num_layers"],
                                size["num_heads"], dropout=0.1).to(device).train()

    def forward(s, a, r, t, m):
        return model(s, a, r, t)
    return model, forward


def _hf_step_fn(size: dict, device):
    try:
        from transformers import DecisionTransformerConfig, DecisionTransformerModel
    except ImportError:
        raise SeqrlError("the Hugging Face peer needs transformers: pip install 'seqrl[bench]'") from None
    config = DecisionTransformerConfig(
        state_dim=OBS_DIM, act_dim=ACT_DIM, hidden_size=size["embed_dim"], n_layer=size["num_layers"],
        n_head=size["num_heads"], n_inner=4 * size["embed_dim"], activation_function="relu",
        max_ep_len=1000, n_positions=1024, resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1,
        action_tanh=True)
    model = DecisionTransformerModel(config).to(device).train()

    def forward(s, a, r, t, m):
        # HF's layout is left-to-right with an attention mask; our right-padded batches fit it as is
        return model(states=s, actions=a, rewards=None, returns_to_go=r.unsqueeze(-1), timesteps=t,
                     attention_mask=m.long(), return_dict=True).action_preds
    return model, forward


def _train_step(model, forward, optimizer, batch, bf16: bool, device) -> None:
    s, a, r, t, m = batch
    with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
        preds = forward(s, a, r, t, m)
    loss = ((preds.float() - a) ** 2)[m].mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
    optimizer.step()


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def matmul_peak_flops(dtype, device, seconds: float = 1.0, n: int = 2048) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    _sync(device)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
        if torch.device(device).type == "cuda" and count % 10:
            continue
        _sync(device)
    _sync(device)
    return 2 * n ** 3 * count / (time.perf_counter() - start)


def model_flops_per_update(size: dict) -> float:
    """Forward + backward FLOPs of one update in the standard transformer count (3 tokens per step)."""
    h, layers, b = size["embed_dim"], size["num_layers"], size["batch_size"]
    tokens_per_seq = 3 * K
    params = layers * 12 * h * h                       # attention (4h^2) + MLP (8h^2) per block
    tokens = b * tokens_per_seq
    return 6 * params * tokens + 6 * layers * tokens * tokens_per_seq * h


def run_train_bench(sizes=("dt", "odt"), precisions=("fp32", "bf16"), seconds: float = 10.0,
                    rounds: int = 3, seed: int = 0, device: str = "cpu",
                    out_dir: str | None = "benchmarks/results", command: str = "") -> dict:
    results = []
    on_gpu = torch.device(device).type == "cuda"
    for precision in precisions:
        peak = matmul_peak_flops(torch.float32 if precision == "fp32" else torch.bfloat16, device)
        for size_name in sizes:
            size = SIZES[size_name]
            batches = _batches(8, size["batch_size"], device, seed)
            impls = {}
            for name, build in (("seqrl", _seqrl_step_fn), ("huggingface", _hf_step_fn)):
                torch.manual_seed(seed)
                model, forward = build(size, device)
                optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
                impls[name] = (model, forward, optimizer)
            rates = {name: [] for name in impls}
            for name, (model, forward, optimizer) in impls.items():   # warm-up
                for batch in batches[:3]:
                    _train_step(model, forward, optimizer, batch, precision == "bf16", device)
            for _ in range(rounds):                                   # alternate A/B rounds
                for name, (model, forward, optimizer) in impls.items():
                    _sync(device)
                    count, start = 0, time.perf_counter()
                    while time.perf_counter() - start < seconds / rounds:
                        _train_step(model, forward, optimizer, batches[count % len(batches)],
                                    precision == "bf16", device)
                        count += 1
                    _sync(device)
                    rates[name].append(count / (time.perf_counter() - start))
            flops = model_flops_per_update(size)
            row = {"size": size_name, **size, "context_len": K, "precision": precision,
                   "matmul_peak_tflops": peak / 1e12, "model_flops_per_update": flops}
            for name, r in rates.items():
                med = statistics.median(r)
                row[f"{name}_updates_per_s"] = med
                row[f"{name}_rounds"] = r
                row[f"{name}_mfu"] = med * flops / peak
            row["ratio"] = row["seqrl_updates_per_s"] / row["huggingface_updates_per_s"]
            results.append(row)
            print(f"{size_name} {precision}: seqrl {row['seqrl_updates_per_s']:.1f} upd/s, "
                  f"HF {row['huggingface_updates_per_s']:.1f} upd/s, ratio {row['ratio']:.2f}x", flush=True)
    import transformers

    result = {"benchmark": "train_throughput", "command": command, "commit": git_commit(),
              "machine": machine_info(), "transformers": transformers.__version__, "device": device,
              "torch_threads": torch.get_num_threads(), "seconds_per_measurement": seconds,
              "rounds": rounds, "seed": seed, "target_ratio": TARGET_RATIO_GPU if on_gpu else TARGET_RATIO_CPU,
              "results": results}
    if out_dir:
        write_result(out_dir, "train_throughput" + ("_gpu" if on_gpu else ""), result, _markdown(result))
    print(_markdown(result))
    return result


def _markdown(r: dict) -> str:
    m = r["machine"]
    lines = [f"# Training throughput: seqrl vs Hugging Face DecisionTransformerModel ({r['device']})", "",
             f"`{r['command']}` at commit `{r['commit']}` on {m.get('gpu') or m['cpu']} "
             f"({m['cores_allowed']} cores allowed, torch {r['torch_threads']} threads, transformers "
             f"{r['transformers']}); {r['rounds']} alternating rounds, {r['seconds_per_measurement']} s "
             f"per implementation, median round. Goal: ratio >= {r['target_ratio']}x.", "",
             "| size | batch | precision | seqrl upd/s | HF upd/s | ratio | seqrl MFU | HF MFU | matmul peak |",
             "|---|---|---|---|---|---|---|---|---|"]
    for x in r["results"]:
        lines.append(f"| {x['size']} ({x['embed_dim']}d, {x['num_layers']}L, {x['num_heads']}h) | "
                     f"{x['batch_size']} | {x['precision']} | {x['seqrl_updates_per_s']:.1f} | "
                     f"{x['huggingface_updates_per_s']:.1f} | **{x['ratio']:.2f}x** | "
                     f"{100 * x['seqrl_mfu']:.1f}% | {100 * x['huggingface_mfu']:.1f}% | "
                     f"{x['matmul_peak_tflops']:.2f} TFLOP/s |")
    return "\n".join(lines) + "\n"
