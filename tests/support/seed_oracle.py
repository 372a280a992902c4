#!/usr/bin/env python3
"""Differential-test oracle: runs the seed's own TrainingCollector (shared/bench/training_collector.py,
unchanged) over prompt/response pairs and prints what it computes for each.

usage: seed_oracle.py SHARED_BENCH_DIR [--texts] < pairs.jsonl > results.jsonl
Each input line: {"prompt": ..., "response": ...}. Each output line: {"relevance", "auto_score",
"tags", "prompt_tokens", "response_tokens"}, and with --texts the "prompt" and "response" the
seed stores (stripped). Run it from a scratch directory: importing the seed
creates ./training_data."""
import json, sys
sys.path.insert(0, sys.argv[1])
import training_collector as tc

texts = "--texts" in sys.argv[2:]
c = tc.TrainingCollector(storage_path="./oracle_data", buffer_size=10**9, auto_flush=False)
for line in sys.stdin:
    p = json.loads(line)
    prompt, response = p["prompt"], p["response"]
    out = {
        "relevance": c._assess_relevance(prompt, response),
        "auto_score": round(c._calculate_quality_score(prompt, response), 2),
        "tags": c._auto_tag(prompt, response),
        "prompt_tokens": len(prompt.split()),
        "response_tokens": len(response.split()),
    }
    if texts:
        out["prompt"], out["response"] = prompt.strip(), response.strip()
    print(json.dumps(out))
