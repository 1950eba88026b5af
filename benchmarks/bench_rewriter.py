"""Rewriter semantic preservation: the share of rewrites that keep every motion, actor and recipient of the
prompt (the pack's atomizer, ``retrieval.rewriter.check_rewrite``) and stay within the word limit.

Prompts: every line of ``../shared/data/prompts/*.txt`` (the paper prompts), plus ``--msrvtt-prompts N`` (default 20)
held-out MSR-VTT captions (one per video, as in bench_retrieval_quality) as a larger second set.
References: the top-5 captions of POS Eq. 3 (``search`` in ``pos`` mode) over an index of the other
MSR-VTT captions of the first ``--videos`` videos (cached in ``bench_out/cache/``; the paper prompts search
the same index). Instruction: the paper's template (k = 5, 20 words), temperature 0.

Two ways to get answers, and the output says which:

- ``--local-model FOLDER``: the local transformers backend (``llm_backends.generate_local``) on a real
  instruct model. The answers are recorded to ``--answers FILE`` (default
  ``benchmarks/data/rewriter_answers_<folder name>.json``).
- otherwise (default): the recorded answers are replayed by a chat-completions server on 127.0.0.1
  (``tests/fake_chat_server.py``) through the HTTP backend (``ChatCompletionsClient``), keyed by the
  exact instruction; an instruction with no recorded answer is counted as "not recorded".

Two configurations: the paper's instruction alone, and the same with a system message asking for the
sentence only (``SYSTEM_PROMPT``).

Usage: ``python benchmarks/bench_rewriter.py [--local-model FOLDER] [--msrvtt-prompts 20] [--videos 500]``
Results: ``bench_out/bench_rewriter.json``. Needs ../shared/data; without it prints "skipped: ..." and
exits 0.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path

import _common as C

NAME = "bench_rewriter"
DATA = Path(__file__).resolve().parent / "data"
DEFAULT_RECORDING = DATA / "rewriter_answers_SmolLM2-135M-Instruct.json"
SYSTEM_PROMPT = "Answer with the rewritten sentence only."
CONFIGS = {"paper template": "", "paper template + system message": SYSTEM_PROMPT}
K, MAX_WORDS, MAX_NEW_TOKENS = 5, 20, 64


def instruction_key(system: str, instruction: str) -> str:
    return hashlib.sha256(f"{system}\n\x00\n{instruction}".encode("utf-8")).hexdigest()[:20]


def load_fake_server():
    return C.load_test_helper("fake_chat_server")


def references_for(prompts, nlp, model, index):
    from comfyui_searchpriors.retrieval.embedding import atomize
    from comfyui_searchpriors.retrieval.search import SearchParams, search

    return [search(index, atomize(p, nlp, model), SearchParams(mode="pos", top_k=K)).reference_captions()
            for p in prompts]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--local-model", help="transformers causal LM folder (an instruct model); default: replay")
    ap.add_argument("--answers", help="recorded answers (JSON) to write (local) or replay (default)")
    ap.add_argument("--msrvtt-prompts", type=int, default=20, help="held-out MSR-VTT captions used as prompts")
    ap.add_argument("--videos", type=int, default=500, help="MSR-VTT videos whose other captions are indexed")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads for the local model (1 is fastest "
                    "on a shared 2-core machine)")
    args = ap.parse_args(argv)
    root = C.require_shared_data(C.MSRVTT_REL)
    prompt_files = sorted((root / "prompts").glob("*.txt"))
    if not prompt_files:
        print(f"skipped: no prompts in {root / 'prompts'}")
        return 0
    wall0 = time.perf_counter()

    from comfyui_searchpriors.retrieval.index import load_index
    from comfyui_searchpriors.retrieval.rewriter import build_instruction, chat_messages, check_rewrite, clean_answer

    env = C.environment()
    nlp, model, _ = C.load_models()
    captions = C.load_msrvtt(root / C.MSRVTT_REL)
    queries, rest = C.heldout_split(captions, args.videos)
    folder, _ = C.cached_index(f"msrvtt-pos-{args.videos}", rest, nlp, model)
    index = load_index(str(folder))
    sets = {"paper prompts": [ln.strip() for f in prompt_files for ln in f.read_text(encoding="utf-8").splitlines()
                              if ln.strip()]}
    if args.msrvtt_prompts:
        sets["MSR-VTT held-out captions"] = [q.entry.caption for q in queries[:args.msrvtt_prompts]]

    jobs = []  # (set, config, prompt, system, instruction)
    for set_name, prompts in sets.items():
        for prompt, refs in zip(prompts, references_for(prompts, nlp, model, index)):
            instruction, _ = build_instruction(prompt, refs, K, MAX_WORDS)
            for config, system in CONFIGS.items():
                jobs.append((set_name, config, prompt, system, instruction))

    answers: dict[str, str] = {}
    if args.local_model:
        from comfyui_searchpriors.retrieval.llm_backends import generate_local, load_causal_lm

        import torch

        torch.set_num_threads(args.threads)
        mode = f"local transformers backend, {Path(args.local_model).name} (CPU, float32, greedy)"
        lm, tokenizer = load_causal_lm(args.local_model)
        recording = Path(args.answers) if args.answers else DATA / f"rewriter_answers_{Path(args.local_model).name}.json"
        gen_s = []
        for n, (_, _, prompt, system, instruction) in enumerate(jobs, 1):
            key = instruction_key(system, instruction)
            if key in answers:
                continue
            t0 = time.perf_counter()
            answers[key] = generate_local(lm, tokenizer, chat_messages(instruction, system), temperature=0.0,
                                          max_new_tokens=MAX_NEW_TOKENS)[0]
            gen_s.append(time.perf_counter() - t0)
            if n % 5 == 0:
                print(f"  {n}/{len(jobs)} answers ({statistics.median(gen_s):.2f} s median)", flush=True)
        DATA.mkdir(parents=True, exist_ok=True)
        recording.write_text(json.dumps({"model": Path(args.local_model).name, "max_new_tokens": MAX_NEW_TOKENS,
                                         "temperature": 0.0, "answers": answers}, indent=1, ensure_ascii=False)
                             + "\n", encoding="utf-8")
        print(f"recorded {len(answers)} answers to {recording.relative_to(C.REPO)}")
        served = len(answers)
    else:
        from comfyui_searchpriors.retrieval.llm_backends import ChatCompletionsClient

        recording = Path(args.answers) if args.answers else DEFAULT_RECORDING
        if not recording.is_file():
            print(f"skipped: no recorded answers at {recording}; run with --local-model FOLDER first")
            return 0
        recorded = json.loads(recording.read_text(encoding="utf-8"))
        mode = (f"recorded answers of {recorded['model']} (local transformers backend, greedy) replayed by a "
                f"chat-completions server on 127.0.0.1 through the HTTP backend")
        table_ = recorded["answers"]

        def reply(body):
            msgs = body["messages"]
            system = msgs[0]["content"] if msgs[0]["role"] == "system" else ""
            hit = table_.get(instruction_key(system, msgs[-1]["content"]))
            return {"content": hit} if hit is not None else {"status": 404, "raw": b'{"error": "not recorded"}'}

        fake = load_fake_server()
        served = 0
        with fake.FakeChatServer(reply) as srv:
            client = ChatCompletionsClient(srv.base_url, recorded["model"], retries=0, timeout_s=10)
            for _, _, _, system, instruction in jobs:
                key = instruction_key(system, instruction)
                if key in answers:
                    continue
                try:
                    answers[key] = client.complete(chat_messages(instruction, system)).text
                    served += 1
                except Exception:
                    pass

    rows, per_prompt = {}, []
    for set_name, config, prompt, system, instruction in jobs:
        raw = answers.get(instruction_key(system, instruction))
        stats = rows.setdefault((set_name, config), {"n": 0, "not_recorded": 0, "kept": 0, "within": 0, "both": 0,
                                                     "empty": 0, "words": [], "lost_roles": {}})
        stats["n"] += 1
        if raw is None:
            stats["not_recorded"] += 1
            continue
        text, _ = clean_answer(raw)
        check = check_rewrite(nlp, prompt, text, MAX_WORDS)
        stats["kept"] += check.kept_every_role
        stats["within"] += not check.too_long and not check.empty
        stats["both"] += check.passed
        stats["empty"] += check.empty
        stats["words"].append(check.words)
        for lost in check.lost:
            stats["lost_roles"][lost.role] = stats["lost_roles"].get(lost.role, 0) + 1
        if set_name == "paper prompts":
            per_prompt.append({"config": config, "prompt": prompt, "rewrite": text, "words": check.words,
                               "lost": [f"{x.role} '{x.phrase}'" for x in check.lost], "passed": check.passed})

    print(f"answers: {mode}")
    print(f"references: POS Eq. 3 top-{K} over {index.count} MSR-VTT captions (first {args.videos} videos, "
          f"held-out caption of each excluded); instruction: the paper's template, {MAX_WORDS} words")
    headers = ["prompts", "configuration", "n", "kept every role", "within limit", "both", "empty", "median words",
               "lost (motion/actor/recipient)"]
    out_rows = []
    for (set_name, config), s in rows.items():
        m = s["n"] - s["not_recorded"]
        share = (lambda x: f"{x}/{m} ({x / m:.0%})") if m else (lambda x: "-")
        lost = "/".join(str(s["lost_roles"].get(r, 0)) for r in ("motion", "actor", "recipient"))
        out_rows.append([set_name, config, m, share(s["kept"]), share(s["within"]), share(s["both"]), s["empty"],
                         statistics.median(s["words"]) if s["words"] else "-", lost])
    print()
    print(C.table(headers, out_rows))
    print()
    for p in per_prompt:
        if p["config"] == "paper template":
            mark = "ok  " if p["passed"] else "FAIL"
            print(f"{mark} {p['prompt']!r} -> {p['rewrite'][:110]!r} ({p['words']} words"
                  f"{'; lost ' + ', '.join(p['lost']) if p['lost'] else ''})")
    missing = sum(s["not_recorded"] for s in rows.values())
    result = {"answers": mode, "recording": str(recording.relative_to(C.REPO)) if recording.is_relative_to(C.REPO)
              else str(recording), "served": served, "not_recorded": missing, "index_captions": index.count,
              "k": K, "max_words": MAX_WORDS, "configs": CONFIGS,
              "rows": [dict(zip(headers, r)) for r in out_rows], "paper_prompts": per_prompt, "environment": env,
              "seconds": time.perf_counter() - wall0, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    path = C.write_result(NAME, result)
    paper = rows.get(("paper prompts", "paper template"), {})
    m = paper.get("n", 0) - paper.get("not_recorded", 0)
    print(f"\nSUMMARY: bench_rewriter [{'local model' if args.local_model else 'replayed recording'}] paper prompts, "
          f"paper template: {paper.get('both', 0)}/{m} rewrites keep every motion/actor/recipient and stay within "
          f"{MAX_WORDS} words ({paper.get('kept', 0)}/{m} keep every role, {paper.get('within', 0)}/{m} within the "
          f"limit); not recorded: {missing}; {time.perf_counter() - wall0:.0f} s; results in "
          f"{path.relative_to(C.REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
