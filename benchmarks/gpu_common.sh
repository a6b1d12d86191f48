# Shared by benchmarks/gpu_check.sh and benchmarks/gpu_train.sh (sourced, not run).
# gpu_init ENV_VAR DEFAULT_OUT REPORT_NAME LOG_FOLDER TITLE "$@" sets DEVICE (the value of ENV_VAR,
# default cuda; cpu with --dry-run), OUTDIR ($OUT or DEFAULT_OUT), REPORT, LOGDIR, PY, T0 and
# writes the report's header. RESULT_PATTERN (an extended regex, default ^RESULT): the log lines
# a part's result row shows.

gpu_init() {
  local var=$1 default_out=$2 report_name=$3 log_folder=$4
  TITLE=$5; shift 5
  DEVICE="${!var:-cuda}"
  for a in "$@"; do [ "$a" = "--dry-run" ] && DEVICE=cpu; done
  OUTDIR="${OUT:-$default_out}"
  REPORT="$OUTDIR/$report_name"
  LOGDIR="$OUTDIR/$log_folder"
  mkdir -p "$OUTDIR" "$LOGDIR" || exit 2
  PY="${PYTHON:-python3}"
  export PYTHONUNBUFFERED=1
  T0=$(date +%s)
  report_header
}

report_header() {
  {
    echo "# $TITLE ($(date -u '+%Y-%m-%d %H:%M UTC'), device $DEVICE)"
    echo
    if command -v nvidia-smi >/dev/null 2>&1; then
      echo '```'; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | head -5; echo '```'
    else
      echo "nvidia-smi: not found (no NVIDIA driver here)"
    fi
    echo
    echo "| part | status | seconds | result |"
    echo "|---|---|---|---|"
  } > "$REPORT"
}

row() { echo "| $1 | $2 | $3 | $4 |" >> "$REPORT"; }

run_part() {  # name limit command...: run with a time limit, log it, add its row
  local name=$1 limit=$2; shift 2
  local t=$(date +%s) status result
  timeout --kill-after=15 "$limit" "$@" > "$LOGDIR/$name.log" 2>&1
  local rc=$?
  if [ $rc -eq 0 ]; then status=ok; elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then status="timeout ${limit}s"; else status="failed rc=$rc"; fi
  result=$(grep -E "${RESULT_PATTERN:-^RESULT }" "$LOGDIR/$name.log" | sed 's/^RESULT //' | tr -s ' \n' ' ' | sed 's/|/\//g' | cut -c1-300)
  [ -z "$result" ] && result=$(tail -n 2 "$LOGDIR/$name.log" | tr '\n' ' ' | sed 's/|/\//g' | cut -c1-300)
  row "$name" "$status" "$(( $(date +%s) - t ))" "$result"
  echo "[$(basename "$0" .sh)] $name: $status ($(( $(date +%s) - t )) s)"
}
