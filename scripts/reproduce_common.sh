# shellcheck shell=bash disable=SC2034  # the variables set here are read by the scripts that source it
# What scripts/reproduce_e2e.sh and scripts/reproduce_glue.sh share; sourced by them, not run. It holds
# their common options, the up-front checks, one training run that resumes or skips what an earlier
# invocation left, lora run with its output logged and signals passed on, reading eval.json, and the
# pieces of the result tables and JSON summaries.
#
# Exit codes of both scripts: 0 every step ran (and every score reached --min-ratio); 1 a lora step
# failed; 2 bad usage, a missing input or a recipe that `lora validate` rejects (nothing trained);
# 3 every step ran but a score is below --min-ratio times the paper's; 75 stopped by SIGINT/SIGTERM
# (lora saved a checkpoint first): run the same command again to resume, as a batch system's requeue does.

repro_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPRO_EXIT_FAILED=1 REPRO_EXIT_USAGE=2 REPRO_EXIT_BELOW=3 REPRO_EXIT_INTERRUPTED=75

repro_lora="$repro_root/build/lora"
repro_model=""    # each script sets its default
repro_data=""
repro_out=""      # default runs/, runs/smoke with --smoke (so that a smoke run never stands for a real one)
repro_sets=()     # --set KEY=VALUE from the command line, passed to every lora validate/train/eval
repro_smoke=0
repro_min_ratio=""
repro_quiet=0

repro_die() {  # repro_die MESSAGE [HINT [CODE]]
  echo "error: $1" >&2
  [[ -n ${2:-} ]] && echo "  hint: $2" >&2
  exit "${3:-$REPRO_EXIT_USAGE}"
}

repro_abspath() { [[ $1 == /* ]] && printf '%s\n' "$1" || printf '%s\n' "$PWD/$1"; }

# repro_common_option "$@": takes one of the options both scripts know from the front of the arguments
# and sets repro_shift to the number of words it used; returns 1 for an option it does not know.
repro_common_option() {
  local opt=$1
  repro_shift=2
  case $opt in
    --lora | --model | --data | --out | --set | --min-ratio)
      [[ $# -ge 2 ]] || repro_die "$opt needs a value" "see --help"
      ;;
  esac
  case $opt in
    --lora) repro_lora=$(repro_abspath "$2") ;;
    --model) repro_model=$(repro_abspath "$2") ;;
    --data) repro_data=$(repro_abspath "$2") ;;
    --out) repro_out=$(repro_abspath "$2") ;;
    --set)
      [[ $2 == *=* ]] || repro_die "--set '$2' is not KEY=VALUE" "e.g. --set model.device=cuda"
      repro_sets+=(--set "$2")
      ;;
    --min-ratio)
      [[ $2 =~ ^[0-9]*\.?[0-9]+$ ]] || repro_die "--min-ratio '$2' is not a number" "e.g. --min-ratio 0.97"
      repro_min_ratio=$2
      ;;
    --smoke) repro_smoke=1 repro_shift=1 ;;
    --quiet) repro_quiet=1 repro_shift=1 ;;
    *) return 1 ;;
  esac
}

# repro_options_done: after the options, the defaults that depend on them.
repro_options_done() {
  [[ -n $repro_out ]] || { ((repro_smoke)) && repro_out="$repro_root/runs/smoke" || repro_out="$repro_root/runs"; }
}

# repro_common_help MODEL DATA: --help's lines for the options above, with the script's defaults.
repro_common_help() {
  cat <<EOF
  --lora PATH       the lora binary (default build/lora; a CUDA build for the paper-scale runs)
  --model DIR       the base model, a HF checkpoint directory (default $1)
  --data DIR        the data directory (default $2)
  --out DIR         the output root: run directories, logs, results (default runs/, runs/smoke with --smoke)
  --set KEY=VALUE   passed to every lora validate, train and eval (repeatable), e.g. --set model.device=cuda
  --smoke           a pipeline check, not a reproduction: train.max_steps=3 and short evaluations
  --min-ratio X     exit 3 when a score is below X times the paper's (for CI)
  --quiet           lora's output goes to the logs only, not to the terminal as well
EOF
}

# repro_help_header SCRIPT: the comment block at the top of SCRIPT, for --help.
repro_help_header() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$1"; }

# Settings added by --smoke, before the user's --set (so that --set train.max_steps=N wins).
repro_smoke_sets() { ((repro_smoke)) && printf '%s\n' --set train.max_steps=3 --set train.eval_batches=2; return 0; }

# --- inputs ---------------------------------------------------------------------------------------------

repro_check_lora() {
  [[ -e $repro_lora ]] || repro_die "the lora binary '$repro_lora' does not exist" \
    "build it (bash scripts/setup.sh builds build/lora) or pass --lora PATH"
  [[ -f $repro_lora && -x $repro_lora ]] || repro_die "'$repro_lora' is not an executable file" \
    "pass the lora binary with --lora PATH"
}

# repro_check_model HINT: the model directory exists and has a config.json (lora validate checks the rest).
repro_check_model() {
  [[ -d $repro_model ]] || repro_die "model directory '$repro_model' does not exist" "$1, or pass --model DIR"
  [[ -f $repro_model/config.json ]] || repro_die "model directory '$repro_model' has no config.json" \
    "$1 (config.json, model.safetensors, vocab.json, merges.txt), or pass --model DIR"
}

# repro_check_files HINT FILE...: every file exists, else one message listing all that are missing.
repro_check_files() {
  local hint=$1 f missing=()
  shift
  for f in "$@"; do [[ -f $f ]] || missing+=("$f"); done
  ((${#missing[@]} == 0)) && return 0
  [[ -d $repro_data ]] || repro_die "data directory '$repro_data' does not exist" "$hint, or pass --data DIR"
  echo "error: missing data file(s) under $repro_data:" >&2
  printf '  %s\n' "${missing[@]}" >&2
  echo "  hint: $hint, or pass --data DIR" >&2
  exit "$REPRO_EXIT_USAGE"
}

repro_check_out() {
  if ! { mkdir -p "$repro_out" 2>/dev/null && [[ -w $repro_out ]]; }; then
    repro_die "output root '$repro_out' cannot be created or written" "pass a writable --out DIR"
  fi
}

# --- running lora ---------------------------------------------------------------------------------------

repro_child=""   # the running lora process
repro_signal=""  # set when this script got SIGINT/SIGTERM
repro_tmp=$(mktemp -d "${TMPDIR:-/tmp}/lora-reproduce.XXXXXX")
trap 'rm -rf "$repro_tmp"' EXIT
# A signal is passed on to lora as SIGTERM (lora train saves a checkpoint and exits 75; a background
# process of a script ignores SIGINT until it installs a handler, which lora eval does not).
repro_on_signal() {
  repro_signal=$1
  [[ -n $repro_child ]] && kill -TERM "$repro_child" 2>/dev/null
  return 0
}
trap 'repro_on_signal INT' INT
trap 'repro_on_signal TERM' TERM

# repro_lora_run LOG ARGS...: runs `lora ARGS` with its output appended to LOG (and shown, unless
# --quiet); returns lora's exit status. lora runs in the background so that the traps above run while
# it does; tee ignores the signals so that lora's last words after one still reach the log.
repro_lora_run() {
  local log=$1 rc=0 tee_pid=""
  shift
  [[ -z $repro_signal ]] || return "$REPRO_EXIT_INTERRUPTED"  # asked to stop: start nothing new
  mkdir -p "$(dirname "$log")"
  printf '\n$ %s %s\n' "$repro_lora" "$*" >>"$log"
  if ((repro_quiet)); then
    "$repro_lora" "$@" </dev/null >>"$log" 2>&1 &
  else
    rm -f "$repro_tmp/out"
    mkfifo "$repro_tmp/out"
    (trap '' INT TERM; exec tee -a "$log" <"$repro_tmp/out") &
    tee_pid=$!
    "$repro_lora" "$@" </dev/null >"$repro_tmp/out" 2>&1 &
  fi
  repro_child=$!
  [[ -z $repro_signal ]] || kill -TERM "$repro_child" 2>/dev/null  # a signal before repro_child was set
  wait "$repro_child" || rc=$?
  while kill -0 "$repro_child" 2>/dev/null; do  # wait returned early to run a trap: wait again
    rc=0
    wait "$repro_child" || rc=$?
  done
  repro_child=""
  [[ -n $tee_pid ]] && { wait "$tee_pid" || true; }
  return "$rc"
}

# repro_stopped RC: true when the pipeline must stop for a signal (lora's 75, or one this script got).
repro_stopped() { [[ $1 == "$REPRO_EXIT_INTERRUPTED" || -n $repro_signal ]]; }

# repro_log_error LOG: lora's last "error: ..." line in LOG (what the summary says about a failed step).
repro_log_error() { grep '^error: ' "$1" 2>/dev/null | tail -n 1 | tr -d '\r' || true; }

# --- run directories ------------------------------------------------------------------------------------

# repro_run_state DIR: new, finished (an adapter was written), resumable (a committed checkpoint, no
# adapter yet) or stale (a run was logged but left no committed checkpoint: it starts again), as
# `lora info DIR --json` reports the run.
repro_run_state() {
  local dir=$1 info
  if [[ ! -e $dir/recipe.yaml ]] || ! info=$("$repro_lora" info "$dir" --json 2>/dev/null); then
    [[ -e $dir/metrics.jsonl ]] && echo stale || echo new
    return 0
  fi
  if grep -q '^  "finished": true' <<<"$info"; then
    echo finished
  elif grep -q '^  "latest": "[^"]' <<<"$info"; then
    echo resumable
  elif [[ -e $dir/metrics.jsonl ]]; then
    echo stale
  else
    echo new
  fi
}

# The options a run was made with, kept in RUN/reproduce-options.txt: --smoke and the --set list, less
# those that cannot change the result (device, logging, cache, eval batch, the METEOR jar). A finished or
# interrupted run is reused only by an invocation with the same options.
repro_options_text() {
  local i
  ((repro_smoke)) && echo "--smoke"
  for ((i = 1; i < ${#repro_sets[@]}; i += 2)); do
    case ${repro_sets[i]} in
      model.device=* | log.* | data.cache_dir=* | eval.meteor_jar=* | eval.batch_size=*) ;;
      *) echo "--set ${repro_sets[i]}" ;;
    esac
  done
  return 0
}

# repro_check_options NAME DIR: stops (exit 2) when DIR holds a run made with other options.
repro_check_options() {
  local name=$1 dir=$2 state before now
  state=$(repro_run_state "$dir")
  [[ $state == finished || $state == resumable ]] || return 0
  [[ -f $dir/reproduce-options.txt ]] || return 0  # trained by hand, as the recipe's header says: reused
  before=$(tr '\n' ' ' <"$dir/reproduce-options.txt")
  now=$(repro_options_text | tr '\n' ' ')
  [[ $before == "$now" ]] && return 0
  echo "error: $name: $dir holds a $state run made with other options" >&2
  echo "  that run: ${before:-(none)}" >&2
  echo "  now:      ${now:-(none)}" >&2
  echo "  hint: pass the same options to continue it, another --out for a new run, or remove $dir" >&2
  exit "$REPRO_EXIT_USAGE"
}

# repro_train NAME RECIPE DIR ARGS...: trains RECIPE into DIR (ARGS: the --set options), unless DIR
# holds a finished run; resumes an interrupted one. Returns lora train's exit status (0 when skipped).
repro_train() {
  local name=$1 recipe=$2 dir=$3 state extra=()
  shift 3
  state=$(repro_run_state "$dir")
  case $state in
    finished)
      echo "$name: $dir holds a finished run: not trained again (remove it to retrain)"
      return 0
      ;;
    resumable)
      echo "$name: resuming the interrupted run in $dir"
      extra=(--resume "$dir")
      ;;
    stale)
      echo "$name: $dir holds a run that stopped before its first checkpoint: training again from the start"
      extra=(--set output.overwrite=true)
      ;;
    new) echo "$name: training into $dir (log: $dir/train.log)" ;;
  esac
  mkdir -p "$dir"
  [[ $state == resumable ]] || repro_options_text >"$dir/reproduce-options.txt"
  repro_lora_run "$dir/train.log" train "$recipe" "$@" --set "output.dir=$dir" "${extra[@]}"
}

# repro_eval_needed ADAPTER_DIR OUT_DIR: true unless OUT_DIR/eval.json is newer than the adapter.
repro_eval_needed() { ! [[ -f $2/eval.json && $2/eval.json -nt $1/adapter_model.safetensors ]]; }

# --- results --------------------------------------------------------------------------------------------

# repro_eval_metric EVAL_JSON NAME: the value of metrics.NAME in lora eval's eval.json ("null" when lora
# could not compute it, nothing when absent).
repro_eval_metric() {
  awk -v key="\"$2\":" '/^  "metrics": \{/ { on = 1; next }
    on && /^  }/ { exit }
    on && $1 == key { v = $2; sub(/,$/, "", v); print v; exit }' "$1"
}

# repro_eval_metrics_json EVAL_JSON: eval.json's metrics object on one line.
repro_eval_metrics_json() {
  awk '/^  "metrics": \{/ { on = 1; next }
    on && /^  }/ { exit }
    on { v = $0; sub(/^ +/, "", v); sub(/,$/, "", v); s = s (n++ ? ", " : "") v }
    END { printf "{%s}", s }' "$1"
}

# repro_scaled VALUE SCALE: VALUE x SCALE with 2 decimals (eval.json's fractions as the paper's percent).
repro_scaled() { awk -v v="$1" -v s="$2" 'BEGIN { printf "%.2f", v * s }'; }
repro_diff() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.2f", a - b }'; }
# repro_below VALUE PAPER: true when --min-ratio is set and VALUE < ratio x PAPER (see repro_below_report).
repro_below() { [[ -n $repro_min_ratio ]] && awk -v v="$1" -v p="$2" -v r="$repro_min_ratio" 'BEGIN { exit !(v < r * p) }'; }

# repro_below_report NAME...: the message for the scores under --min-ratio, on stderr.
repro_below_report() {
  echo "error: below $repro_min_ratio x the paper's score (--min-ratio): $*" >&2
  return 0
}

repro_json_str() {  # a JSON string; control characters become spaces
  local s
  s=$(printf '%s' "$1" | tr '\000-\037' ' ')
  s=${s//\\/\\\\}
  printf '"%s"' "${s//\"/\\\"}"
}
repro_json_num() { if [[ -n ${1:-} && $1 != null ]]; then printf '%s' "${1#+}"; else printf 'null'; fi; }  # JSON has no +1

repro_smoke_banner() {
  ((repro_smoke)) && echo "SMOKE RUN (--smoke: a few training steps): a check of the pipeline, not a reproduction"
  return 0
}
