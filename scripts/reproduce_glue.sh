#!/usr/bin/env bash
# The LoRA paper's GLUE results for RoBERTa-base in one command (Hu et al. 2021, table 2: MNLI 87.5,
# SST-2 95.1, MRPC 89.7, CoLA 63.4, QNLI 93.3, QQP 90.8, RTE 86.6, STS-B 91.5, average 87.2): for each
# task, `lora validate`, `lora train` and `lora eval` on the dev set of configs/glue-roberta-base-TASK.yaml,
# MNLI first: MRPC, RTE and STS-B start from MNLI's adapter (the recipes' lora.init_from) and run only
# once it is trained. Then each task's score beside the paper's, printed and written to
# OUT/glue-results.txt and OUT/glue-results.json. Scores as the paper reports them, in percent:
# accuracy (MNLI: the matched dev set), Matthews correlation for CoLA, Pearson correlation for STS-B.
#
# Usage: scripts/reproduce_glue.sh [--tasks mnli,sst2,...] [--lora PATH] [--model DIR] [--data DIR] [--out DIR]
#                                  [--set KEY=VALUE ...] [--smoke] [--min-ratio X] [--quiet]
# Inputs, nothing downloaded: MODEL (default models/roberta-base) the HF roberta-base checkpoint in
# safetensors; DATA (default data/glue) GLUE's files as the recipes' headers name them: MNLI/train.tsv and
# MNLI/dev_matched.tsv (MNLI/dev_mismatched.tsv, when present, is evaluated too), SST-2/, MRPC/, CoLA/,
# QNLI/, QQP/, RTE/, STS-B/ with train.tsv and dev.tsv. A folder with train.jsonl and no train.tsv is read
# as HF datasets' JSONL export instead (train.jsonl, dev.jsonl or dev_matched.jsonl: the safer source for
# QQP, whose train.tsv has malformed rows). Each task runs in OUT/glue-roberta-base-TASK
# (train.log, eval-dev.log, eval-dev/eval.json). A task that fails is reported and the tasks that start
# from it are skipped; the others still run. Run again, a finished task is not trained again, an
# interrupted one is resumed (lora train --resume), and a task is evaluated again only when its eval.json
# is older than its adapter.
# Exit codes: 0 done; 1 a step failed; 2 bad usage or input, nothing trained; 3 a score below --min-ratio;
# 75 stopped by SIGINT/SIGTERM after lora saved its checkpoint: run the same command again to resume.
set -euo pipefail
# shellcheck source=scripts/reproduce_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/reproduce_common.sh"
repro_model="$repro_root/models/roberta-base"
repro_data="$repro_root/data/glue"

# The paper's order, MNLI first. Data folder (also the name shown), dev file (less .tsv or .jsonl),
# metric of eval.json, paper.
all_tasks=(mnli sst2 mrpc cola qnli qqp rte stsb)
declare -A folder=([mnli]=MNLI [sst2]=SST-2 [mrpc]=MRPC [cola]=CoLA [qnli]=QNLI [qqp]=QQP [rte]=RTE [stsb]=STS-B)
declare -A dev=([mnli]=dev_matched [sst2]=dev [mrpc]=dev [cola]=dev [qnli]=dev [qqp]=dev [rte]=dev [stsb]=dev)
declare -A metric=([mnli]=accuracy [sst2]=accuracy [mrpc]=accuracy [cola]=matthews [qnli]=accuracy [qqp]=accuracy
  [rte]=accuracy [stsb]=pearson)
declare -A paper=([mnli]=87.5 [sst2]=95.1 [mrpc]=89.7 [cola]=63.4 [qnli]=93.3 [qqp]=90.8 [rte]=86.6 [stsb]=91.5)
declare -A from_mnli=([mrpc]=1 [rte]=1 [stsb]=1)  # lora.init_from: MNLI's run

usage() {
  repro_help_header "${BASH_SOURCE[0]}"
  echo
  echo "Options:"
  echo "  --tasks LIST      comma-separated, from: ${all_tasks[*]} (default all); MNLI runs first"
  repro_common_help models/roberta-base data/glue
}
tasks_arg=all
while (($#)); do
  case $1 in
    -h | --help) usage && exit 0 ;;
    --tasks)
      [[ $# -ge 2 ]] || repro_die "--tasks needs a value" "e.g. --tasks mnli,mrpc"
      tasks_arg=$2
      shift 2
      ;;
    *)
      repro_common_option "$@" || repro_die "unknown option '$1'" "see scripts/reproduce_glue.sh --help"
      shift "$repro_shift"
      ;;
  esac
done
repro_options_done

declare -A wanted=()
if [[ $tasks_arg == all ]]; then
  for t in "${all_tasks[@]}"; do wanted[$t]=1; done
else
  IFS=, read -ra list <<<"$tasks_arg"
  for t in "${list[@]}"; do
    t=${t,,}
    t=${t//-/}
    [[ -n ${folder[$t]:-} ]] || repro_die "--tasks: unknown task '$t'" "choose from: ${all_tasks[*]}"
    wanted[$t]=1
  done
fi
tasks=()
for t in "${all_tasks[@]}"; do [[ -n ${wanted[$t]:-} ]] && tasks+=("$t"); done
((${#tasks[@]})) || repro_die "--tasks names no task" "choose from: ${all_tasks[*]}"

recipe_of() { echo "$repro_root/configs/glue-roberta-base-$1.yaml"; }
run_of() { echo "$repro_out/glue-roberta-base-$1"; }
# task_file TASK NAME: the task's file NAME.tsv, or NAME.jsonl when its folder holds train.jsonl, no train.tsv.
task_file() {
  local base="$repro_data/${folder[$1]}"
  [[ ! -f $base/train.tsv && -f $base/train.jsonl ]] && echo "$base/$2.jsonl" || echo "$base/$2.tsv"
}
eval_dir_of() { echo "$(run_of "$1")/eval-$2"; }  # TASK DEV_NAME
mnli_run=$(run_of mnli)
mm_dev=$(task_file mnli dev_mismatched)

repro_check_lora
repro_check_model "put the HF roberta-base checkpoint there as the headers of configs/glue-roberta-base-*.yaml say"
files=()
for t in "${tasks[@]}"; do files+=("$(task_file "$t" train)" "$(task_file "$t" "${dev[$t]}")"); done
repro_check_files "put GLUE's files there as the headers of configs/glue-roberta-base-*.yaml name them (HF datasets' JSONL export works too: train.jsonl, dev.jsonl)" "${files[@]}"
if [[ -z ${wanted[mnli]:-} ]]; then
  for t in "${tasks[@]}"; do
    [[ -n ${from_mnli[$t]:-} && $(repro_run_state "$mnli_run") != finished ]] &&
      repro_die "$t starts from MNLI's adapter (lora.init_from), but $mnli_run holds no finished MNLI run" \
        "add mnli to --tasks (it runs first), or train it into that directory"
  done
fi
for t in "${tasks[@]}"; do repro_check_options "$t" "$(run_of "$t")"; done
repro_check_out
mapfile -t smoke < <(repro_smoke_sets)

# task_sets TASK: the --set options of TASK's lora commands.
task_sets() {
  local t=$1
  printf '%s\n' --set "model.path=$repro_model" --set "data.train=$(task_file "$t" train)" \
    --set "data.eval=$(task_file "$t" "${dev[$t]}")"
  # CoLA's recipe names the columns of its header-less TSV; the JSONL export names them.
  [[ $t == cola && $(task_file cola train) == *.jsonl ]] &&
    printf '%s\n' --set "data.text_fields=[sentence]" --set data.label_field=label
  if [[ -n ${from_mnli[$t]:-} ]]; then
    # Before MNLI is trained, validate checks all but the start: lora train checks it when it is there.
    [[ $(repro_run_state "$mnli_run") == finished ]] && printf '%s\n' --set "lora.init_from=$mnli_run" ||
      printf '%s\n' --set "lora.init_from="
  fi
  printf '%s\n' "${smoke[@]}" "${repro_sets[@]}"
}

# task_pending TASK: true when TASK has a training or an evaluation left to do.
task_pending() {
  local run
  run=$(run_of "$1")
  [[ $(repro_run_state "$run") != finished ]] || repro_eval_needed "$run" "$(eval_dir_of "$1" "${dev[$1]}")" ||
    { [[ $1 == mnli && -f $mm_dev ]] && repro_eval_needed "$run" "$(eval_dir_of mnli dev_mismatched)"; }
}

rejected=()
for t in "${tasks[@]}"; do
  task_pending "$t" || continue
  run=$(run_of "$t")
  echo "${folder[$t]}: lora validate (log: $run/validate.log)"
  mapfile -t sets < <(task_sets "$t")
  rc=0
  repro_lora_run "$run/validate.log" validate "$(recipe_of "$t")" "${sets[@]}" --set "output.dir=$run" || rc=$?
  repro_stopped "$rc" && { echo "stopped by a signal before training; nothing to resume"; exit "$REPRO_EXIT_INTERRUPTED"; }
  ((rc == 0)) || rejected+=("$t")
done
((${#rejected[@]} == 0)) || repro_die "lora validate rejected the recipe of: ${rejected[*]} (above, and in each run's validate.log)" \
  "fix what it names, or leave those tasks out with --tasks; nothing was trained"

declare -A status=() value=() note=() evaljson=() mm=()
overall=ok

# write_results: the table (printed and OUT/glue-results.txt) and OUT/glue-results.json; sets below.
below=()
write_results() {
  local t shown diff n=0 sum=0 psum=0 avg="" pavg="" adiff="" json_tasks="" ev
  {
    repro_smoke_banner
    echo "GLUE dev sets, RoBERTa-base + LoRA (configs/glue-roberta-base-TASK.yaml): $overall"
    echo "  runs in $repro_out/glue-roberta-base-TASK"
    printf '  %-8s %-9s %9s %6s %11s  %s\n' task metric "this run" paper difference status
    for t in "${tasks[@]}"; do
      shown="" diff=""
      if [[ -n ${value[$t]:-} ]]; then
        shown=${value[$t]}
        diff=$(repro_diff "$shown" "${paper[$t]}")
        n=$((n + 1))
        sum=$(awk -v a="$sum" -v b="$shown" 'BEGIN { printf "%.6f", a + b }')
        psum=$(awk -v a="$psum" -v b="${paper[$t]}" 'BEGIN { printf "%.6f", a + b }')
        if repro_below "$shown" "${paper[$t]}"; then
          below+=("$t")
          note[$t]="${note[$t]:+${note[$t]}; }below $repro_min_ratio x the paper"
        fi
      fi
      printf '  %-8s %-9s %9s %6s %11s  %s\n' "${folder[$t]}" "${metric[$t]}" "${shown:--}" "${paper[$t]}" "${diff}" \
        "${status[$t]:-not run}${note[$t]:+: ${note[$t]}}"
      [[ $t == mnli && -n ${mm[mnli]:-} ]] &&
        printf '  %-8s %-9s %9s %6s %11s  %s\n' MNLI-mm accuracy "${mm[mnli]}" - "" "the mismatched dev set"
      ev=${evaljson[$t]:-}
      json_tasks+="${json_tasks:+,}
    \"$t\": {\"status\": \"${status[$t]:-not run}\", \"note\": $(repro_json_str "${note[$t]:-}"), \"metric\": \"${metric[$t]}\", \"value\": $(repro_json_num "$shown"), \"paper\": ${paper[$t]}, \"difference\": $(repro_json_num "$diff"),
      \"run\": $(repro_json_str "$(run_of "$t")"), \"eval\": $([[ -n $ev ]] && repro_json_str "$ev" || echo null), \"eval_metrics\": $([[ -n $ev ]] && repro_eval_metrics_json "$ev" || echo null)"
      [[ $t == mnli ]] && json_tasks+=", \"mismatched_accuracy\": $(repro_json_num "${mm[mnli]:-}")"
      json_tasks+="}"
    done
    if ((n > 0)); then
      avg=$(awk -v s="$sum" -v n="$n" 'BEGIN { printf "%.2f", s / n }')
      pavg=$(awk -v s="$psum" -v n="$n" 'BEGIN { printf "%.1f", s / n }')
      adiff=$(awk -v s="$sum" -v p="$psum" -v n="$n" 'BEGIN { printf "%+.2f", (s - p) / n }')
      local of="over the $n tasks above"
      ((n == 1)) && of="of the 1 task above"
      ((n < ${#tasks[@]})) && of="over the $n of ${#tasks[@]} tasks that have a score"
      ((n < 8)) && of+="; the paper's 87.2 is over all 8"
      printf '  %-18s %9s %6s %11s  %s\n' average "$avg" "$pavg" "$adiff" "$of"
    fi
    echo "  in percent (eval.json holds fractions); the paper: Hu et al. 2021, table 2, RoBERTa base (LoRA), which reports"
    echo "  MNLI's matched and mismatched accuracy as one (this table: matched; mismatched below it when evaluated)"
  } >"$repro_out/glue-results.txt"
  cat "$repro_out/glue-results.txt"
  {
    echo "{"
    echo "  \"pipeline\": \"glue\","
    echo "  \"status\": \"$overall\","
    echo "  \"smoke\": $([[ $repro_smoke == 1 ]] && echo true || echo false),"
    echo "  \"units\": \"percent: accuracy, Matthews correlation (CoLA), Pearson correlation (STS-B)\","
    echo "  \"min_ratio\": $(repro_json_num "$repro_min_ratio"),"
    echo "  \"below_min_ratio\": [$(for t in "${below[@]}"; do printf '%s"%s"' "${sep:-}" "$t"; sep=", "; done)],"
    echo "  \"average\": {\"tasks\": $n, \"value\": $(repro_json_num "$avg"), \"paper\": $(repro_json_num "$pavg"), \"difference\": $(repro_json_num "$adiff")},"
    echo "  \"tasks\": {$json_tasks"
    echo "  }"
    echo "}"
  } >"$repro_out/glue-results.json"
  echo "results: $repro_out/glue-results.txt, $repro_out/glue-results.json"
}

# step_failed TASK RC STEP LOG: records a failed step, or ends the pipeline (75) for a signal.
step_failed() {
  local t=$1 rc=$2 step=$3 log=$4
  if repro_stopped "$rc"; then
    status[$t]=interrupted
    note[$t]="$step stopped by a signal; run the same command again to continue"
    overall=interrupted
    write_results
    exit "$REPRO_EXIT_INTERRUPTED"
  fi
  status[$t]=failed
  note[$t]="$step exited $rc, see $log: $(repro_log_error "$log")"
  overall=failed
}

# evaluate TASK DEV_NAME: lora eval of TASK's run on its file DEV_NAME unless its eval.json is up to date;
# sets ev to the eval.json path and returns lora's exit status.
evaluate() {
  local t=$1 file run out rc=0
  file=$(task_file "$t" "$2")
  run=$(run_of "$t")
  out=$(eval_dir_of "$t" "$2")
  ev="$out/eval.json"
  if repro_eval_needed "$run" "$out"; then
    echo "${folder[$t]}: evaluating on $file (log: $out.log)"
    repro_lora_run "$out.log" eval "$(recipe_of "$t")" "${sets[@]}" --set "data.eval=$file" --adapter "$run" --out "$out" ||
      rc=$?
  else
    echo "${folder[$t]}: $ev is newer than the adapter: not evaluated again"
  fi
  return "$rc"
}

for t in "${tasks[@]}"; do
  run=$(run_of "$t")
  if [[ -n ${from_mnli[$t]:-} && $(repro_run_state "$mnli_run") != finished ]]; then
    status[$t]=skipped
    note[$t]="starts from MNLI's adapter, and MNLI did not finish"
    continue
  fi
  mapfile -t sets < <(task_sets "$t")
  rc=0
  repro_train "${folder[$t]}" "$(recipe_of "$t")" "$run" "${sets[@]}" || rc=$?
  ((rc == 0)) || { step_failed "$t" "$rc" "lora train" "$run/train.log"; continue; }
  repro_stopped 0 && step_failed "$t" 0 "lora train" "$run/train.log"
  evaluate "$t" "${dev[$t]}" || rc=$?
  ((rc == 0)) || { step_failed "$t" "$rc" "lora eval" "${ev%/eval.json}.log"; continue; }
  repro_stopped 0 && step_failed "$t" 0 "lora eval" "${ev%/eval.json}.log"
  evaljson[$t]=$ev
  if [[ $t == mnli && -f $mm_dev ]]; then
    evaluate mnli dev_mismatched || rc=$?
    ((rc == 0)) || { step_failed "$t" "$rc" "lora eval (mismatched)" "${ev%/eval.json}.log"; continue; }
    repro_stopped 0 && step_failed "$t" 0 "lora eval" "${ev%/eval.json}.log"
    v=$(repro_eval_metric "$ev" accuracy)
    [[ -n $v && $v != null ]] && mm[mnli]=$(repro_scaled "$v" 100)
  fi
  v=$(repro_eval_metric "${evaljson[$t]}" "${metric[$t]}")
  status[$t]=ok
  if [[ -n $v && $v != null ]]; then
    value[$t]=$(repro_scaled "$v" 100)
  else
    note[$t]="eval.json has no ${metric[$t]} (null: not defined for these predictions)"
  fi
done

write_results
[[ $overall == ok ]] || exit "$REPRO_EXIT_FAILED"
((${#below[@]} == 0)) || { repro_below_report "${below[@]}"; exit "$REPRO_EXIT_BELOW"; }
