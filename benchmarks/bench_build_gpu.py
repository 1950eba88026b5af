"""The index build's encoder bound on a GPU: all-MiniLM-L6-v2's architecture alone, with plain transformers.

For a machine without the pack's dependencies (no spaCy, no sentence-transformers, no model files, no
internet): only torch and transformers are needed. The model is ``transformers.BertModel`` built from
all-MiniLM-L6-v2's configuration (6 layers, width 384, 12 heads, FFN 1536, vocabulary 30,522) with random
weights: the same arithmetic as the real model, so the same time. The captions are token-id sequences
whose lengths follow the MiniLM tokenizer's lengths of the 118,094 distinct MSR-VTT train+val captions
(histogram below, measured with ``embedding.token_lengths``; mean 12.2 tokens with [CLS] and [SEP]).

What one row times, as ``index.build_index`` encodes on a GPU (``embedding.length_batches`` +
``encode_batch``): N captions grouped into batches of one token length each and about ``batch_tokens``
tokens (no padding, no attention mask), each batch's ids copied to the device, the encoder run, mean
pooling, L2 normalisation, the vectors copied back to the CPU as float32. Rows: each dtype (float32: what
Sentence-Transformers runs by default; bfloat16 / float16: ``model.half()``-style) x each batch size in
tokens (2,048 is the pack's default; larger batches fill a big GPU better). One warm-up pass per row first.
Tokenisation is not included (it needs the vocabulary file; on 2 CPU cores ``embedding.token_lengths``
runs at ~6,000-15,000 captions/s per core, see benchmarks/README.md), nor the spaCy parse, which the build
runs in helper processes beside the encoder.

Usage on the GPU machine (prints a table and ``SUMMARY build_gpu: ...``; ``--json PATH`` also writes it):
    python3 benchmarks/bench_build_gpu.py --device cuda [--n 200000] [--dtypes float32,bfloat16]
        [--batch-tokens 2048,16384,65536] [--json $OUT/bench_build_gpu.json]
``--device cpu --n 2000 --batch-tokens 2048 --dtypes float32`` runs the same on a CPU (for comparison with
``bench_build.py``'s encoder-alone row, which runs the real model).
"""

from __future__ import annotations

import argparse
import platform
import random
import time

import _common as C  # the script's own folder is on sys.path

# Token lengths (with [CLS]/[SEP]) of the distinct MSR-VTT train+val captions under all-MiniLM-L6-v2's tokenizer.
MSRVTT_TOKEN_LENGTHS = {
    4: 3, 5: 295, 6: 3860, 7: 8442, 8: 11995, 9: 12191, 10: 12336, 11: 12717, 12: 11769, 13: 9736, 14: 7583,
    15: 5891, 16: 4524, 17: 3613, 18: 2874, 19: 2085, 20: 1740, 21: 1325, 22: 1054, 23: 852, 24: 651, 25: 511,
    26: 389, 27: 337, 28: 299, 29: 219, 30: 172, 31: 138, 32: 98, 33: 93, 34: 65, 35: 52, 36: 46, 37: 30,
    38: 24, 39: 20, 40: 6, 41: 4, 42: 5, 43: 7, 44: 8, 45: 4, 46: 1, 47: 6, 48: 5, 49: 3, 50: 1, 51: 3, 52: 2,
    53: 2, 54: 2, 55: 2, 59: 1, 60: 2, 75: 1}
MINILM_L6 = dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                 intermediate_size=1536, hidden_act="gelu", max_position_embeddings=512, type_vocab_size=2,
                 layer_norm_eps=1e-12, pad_token_id=0)


def caption_lengths(n: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    lengths, weights = zip(*sorted(MSRVTT_TOKEN_LENGTHS.items()))
    return rng.choices(lengths, weights=weights, k=n)


def length_batches(lengths: list[int], batch_tokens: int) -> list[tuple[int, int]]:
    """(token length, rows) of each batch: one length per batch, about ``batch_tokens`` tokens, shortest first
    (the pack's ``embedding.length_batches``)."""
    count: dict[int, int] = {}
    for length in lengths:
        count[length] = count.get(length, 0) + 1
    out = []
    for length in sorted(count):
        step = max(1, batch_tokens // length)
        left = count[length]
        while left > 0:
            out.append((length, min(step, left)))
            left -= step
    return out


def build_model(torch, device: str, dtype):
    import transformers

    config = transformers.BertConfig(**MINILM_L6)
    try:
        model = transformers.BertModel(config, add_pooling_layer=False)
    except TypeError:
        model = transformers.BertModel(config)
    return model.to(device=device, dtype=dtype).eval()


def run_row(torch, model, device: str, batches, vocab: int, seed: int = 0) -> float:
    """Seconds to encode every batch (ids made on the CPU, copied over, pooled, normalised, copied back)."""
    gen = torch.Generator().manual_seed(seed)
    inputs = [torch.randint(1000, vocab, (rows, length), generator=gen) for length, rows in batches]
    for ids in inputs:
        ids[:, 0], ids[:, -1] = 101, 102   # [CLS] ... [SEP]
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    t0 = time.perf_counter()
    with torch.inference_mode():
        for ids in inputs:
            hidden = model(input_ids=ids.to(device, non_blocking=True)).last_hidden_state
            pooled = hidden.float().mean(dim=1)
            vectors = torch.nn.functional.normalize(pooled, dim=1)
            vectors.cpu()
    sync()
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--n", type=int, default=200_000, help="captions per row (default 200,000)")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--batch-tokens", default="2048,16384,65536")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()

    import torch

    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device visible to torch; use --device cpu")
    dtypes = [getattr(torch, d.strip()) for d in args.dtypes.split(",") if d.strip()]
    sizes = [int(x) for x in args.batch_tokens.split(",") if x.strip()]
    lengths = caption_lengths(args.n)
    gpu = torch.cuda.get_device_name(device) if device.startswith("cuda") else platform.processor() or "cpu"
    print(f"{args.n} captions, mean {sum(lengths) / len(lengths):.1f} tokens; device {device} ({gpu}); "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    results = []
    for dtype in dtypes:
        model = build_model(torch, device, dtype)
        for size in sizes:
            batches = length_batches(lengths, size)
            warm = length_batches(caption_lengths(min(args.n, 5000), seed=1), size)
            run_row(torch, model, device, warm, MINILM_L6["vocab_size"], seed=1)
            seconds = run_row(torch, model, device, batches, MINILM_L6["vocab_size"])
            rate = args.n / seconds
            results.append({"dtype": str(dtype).replace("torch.", ""), "batch_tokens": size, "batches": len(batches),
                            "seconds": seconds, "captions_per_s": rate})
            print(f"  {results[-1]['dtype']:>8}  batch {size:>6} tokens: {seconds:7.2f} s  {rate:10.0f} captions/s",
                  flush=True)
        del model
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    print()
    header = f"{'dtype':>9} {'batch tokens':>12} {'batches':>8} {'seconds':>8} {'captions/s':>11}"
    print(header)
    print("-" * len(header))
    for r in results:
        print(f"{r['dtype']:>9} {r['batch_tokens']:>12} {r['batches']:>8} {r['seconds']:>8.2f} "
              f"{r['captions_per_s']:>11.0f}")
    fp32 = [r for r in results if r["dtype"] == "float32"]
    best = max(results, key=lambda r: r["captions_per_s"])
    default = next((r for r in fp32 if r["batch_tokens"] == 2048), None)
    summary = (f"SUMMARY build_gpu: MiniLM-L6 encoder alone on {gpu}: "
               f"best {best['captions_per_s']:.0f} captions/s "
               f"({best['dtype']}, {best['batch_tokens']} tokens/batch)"
               + (f"; the pack's default (float32, 2048 tokens/batch) {default['captions_per_s']:.0f}/s"
                  if default else "")
               + f"; n={args.n}")
    print(summary)
    if args.json:
        C.write_result("bench_build_gpu", {"device": device, "gpu": gpu, "torch": torch.__version__, "n": args.n,
                                           "rows": results, "summary": summary}, out=args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
