#!/usr/bin/env bash
# make slurm-test: run a small simulated cohort through a real one-node SLURM with the
# snakemake SLURM executor, check the jobs went through SLURM and that every result
# table equals the one of a local run.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
BIN="$REPO/.venv/bin"
WORK=${SLURM_TEST_DIR:-$(mktemp -d /tmp/cartcohort-slurm-test.XXXX)}
export SLURM_STATE="$WORK/slurm-state"

# what is checked (jobs through sbatch, identical tables) does not depend on the size of
# the gene space: 2,000 background genes, and the `tables` target (no figures/report)
"$BIN/python" "$REPO/workflow/scripts/simulate_demo.py" --out "$WORK/cohort" --seed 3 \
  --n-patients 6 --min-cells 150 --max-cells 300 --n-background-genes 2000
common=(tables -s "$REPO/Snakefile" --configfile "$REPO/config/config.yaml"
        --config samples="$WORK/cohort/samples.tsv" clinical="$WORK/cohort/clinical.tsv")

mkdir -p "$WORK/local" "$WORK/slurm"
# the local run goes on while SLURM is installed and started (apt-get waits on I/O)
echo "== local run (in the background, log: $WORK/local-run.log)"
"$BIN/snakemake" "${common[@]}" -d "$WORK/local" --cores 2 --quiet \
  > "$WORK/local-run.log" 2>&1 &
local_pid=$!

set +e
"$REPO/tools/slurm/up.sh"
rc=$?
set -e
if [ $rc -ne 0 ]; then kill "$local_pid" 2>/dev/null || true; fi
if [ $rc -eq 3 ]; then
  echo "!!!!!!!! SLURM TEST SKIPPED: apt-get is not available on this machine !!!!!!!!" >&2
  exit 0
elif [ $rc -ne 0 ]; then
  echo "SLURM bring-up failed (exit $rc)" >&2; exit $rc
fi
trap '"$REPO/tools/slurm/down.sh"' EXIT

if ! wait "$local_pid"; then
  tail -30 "$WORK/local-run.log" >&2; echo "FAIL: the local run failed" >&2; exit 1
fi
echo "== SLURM run"
timeout -s KILL 1800 "$BIN/snakemake" "${common[@]}" -d "$WORK/slurm" \
  --profile "$REPO/profiles/slurm" --jobs 4 2>&1 | tee "$WORK/slurm-run.log"

# Evidence the jobs really went through SLURM: the executor reports every sbatch
# submission with its SLURM job id (successful jobs' SLURM logs are cleaned up).
n_sub=$(grep -c "has been submitted with SLURM jobid" "$WORK/slurm-run.log" || true)
n_local=$(grep -c "^localrule " "$WORK/slurm-run.log" || true)
if [ "${n_sub:-0}" -lt 10 ]; then
  echo "FAIL: only ${n_sub:-0} jobs were submitted through sbatch" >&2; exit 1
fi
echo "SLURM: $n_sub jobs submitted with sbatch ($n_local small rules ran locally)"
status=0
for f in "$WORK/local/results/tables/"*; do
  name=$(basename "$f")
  if ! cmp -s "$f" "$WORK/slurm/results/tables/$name"; then
    echo "FAIL: results/tables/$name differs between the local and the SLURM run" >&2
    status=1
  fi
done
[ $status -eq 0 ] && echo "slurm-test: OK — $(ls "$WORK/local/results/tables" | wc -l) tables identical"
exit $status
