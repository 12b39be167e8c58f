#!/usr/bin/env bash
# Leaving a hosted fine-tune, end to end and offline (docs/migrating-from-openai.md), on a 2-core CPU in ~35 min:
#   1. the job's files (OpenAI chat JSONL) and a stand-in for its ft: model, served over HTTP
#   2. import the job               -> examples/migrate-openai/config.yaml (mapping table printed)
#   3. capture the ft: model's answers to the training prompts -> data/captured.jsonl
#   4. train the embedded model on the captured answers and evaluate it against the ft: model
#      on the team's test set: the parity certificate (runs/routing/report.md)
#   5. export merge --verify, export gguf --verify: do the shipped files answer like the adapter?
# Run from the repository root: bash examples/migrate-openai/run.sh
set -euo pipefail
cd "$(dirname "$0")"
EX=$PWD
URL=http://127.0.0.1:8765/v1

python make_files.py

# 1. the stand-in ft: model (skip its training when a previous run left its adapter)
if [ ! -f ../../runs/acme-routing-ft/adapter/adapter_config.json ]; then
  tunesmith data prepare standin.yaml
  tunesmith train standin.yaml
fi
tunesmith serve standin.yaml > data/standin-serve.log 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 120); do curl -sf $URL/models > /dev/null && break; sleep 1; done
curl -sf $URL/models > /dev/null || { echo "the stand-in server did not start: see $EX/data/standin-serve.log"; exit 1; }

# 2. the job -> a run config (the ft: model answers at the stand-in's URL instead of api.openai.com)
#    --price-*: what the team pays for its ft: model (OpenAI's fine-tuned gpt-4o-mini: $0.30 / $1.20 per million
#    input / output tokens), for the parity certificate's cost column
tunesmith import-job job.json --files-dir data/files --output config.yaml \
  --reference-base-url $URL --reference-model acme-routing-ft --reference-key-env '' \
  --price-input 0.30 --price-output 1.20

# 3. the ft: model's answers to the training prompts become the training file (resumable; journaled)
tunesmith data capture data/files/file-RoutingTrain01.jsonl --output data/captured.jsonl \
  --base-url $URL --model acme-routing-ft --api-key-env '' --concurrency 8 --max-tokens 16

# 4. train on them, evaluate tuned vs base vs the ft: model on the fixed test set, parity verdict.
#    The overrides: the captured file, the team's test set, a 6-minute budget for this CPU, the hourly price of
#    the machine the local model runs on (a 2-vCPU cloud VM, about $0.09/h: an assumption, set yours), and a
#    smaller regression check (20 prompts of each kind) that keeps the example's evaluation near 5 minutes.
RUN=(data.train_file=data/captured.jsonl data.test_file=data/test.jsonl
     train.time_budget=6m train.task_eval_examples=24 eval.models='[base,tuned,ft-model]' eval.parity.usd_per_hour=0.09
     eval.adversarial.max_prompts=20 eval.regression.max_prompts=20 eval.regression.instruction_prompts=20)
tunesmith run config.yaml "${RUN[@]}"

# 5. the files that ship, against the adapter, on the same test set
tunesmith export merge config.yaml --verify
tunesmith export gguf config.yaml --verify
echo "report: $EX/runs/routing/report.md   verify: $EX/runs/routing/verify/"
