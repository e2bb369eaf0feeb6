#!/usr/bin/env bash
# The LoRA paper's E2E NLG result for GPT-2 Medium in one command (Hu et al. 2021, table 3: BLEU 70.4,
# NIST 8.85, METEOR 46.8, ROUGE-L 71.8, CIDEr 2.53): `lora validate`, `lora train` and `lora eval` of
# configs/e2e-gpt2-medium.yaml, the evaluation on the test split with the recipe's beam search (beam 10,
# length penalty 0.8, no-repeat 4), then the five metrics beside the paper's, printed and written to
# OUT/e2e-results.txt and OUT/e2e-results.json.
#
# Usage: scripts/reproduce_e2e.sh [--lora PATH] [--model DIR] [--data DIR] [--out DIR] [--set KEY=VALUE ...]
#                                 [--smoke] [--min-ratio X] [--quiet]
# Inputs, nothing downloaded: MODEL (default models/gpt2-medium) a HF GPT-2 Medium checkpoint in
# safetensors, DATA (default data/e2e) train.txt, valid.txt and test.txt, one "MR||text" example a line;
# the recipe's header says how to get both. The run goes to OUT/e2e-gpt2-medium (train.log, eval-test.log,
# eval-test/eval.json). Run again, it trains nothing when that directory holds a finished run, resumes an
# interrupted one (lora train --resume) and evaluates again only when eval-test/eval.json is older than
# the adapter. METEOR needs Java and METEOR 1.5's jar (LORA_METEOR_JAR or --set eval.meteor_jar=PATH;
# README's `lora eval` section says how to get it); without them the table says "not computed".
# Exit codes: 0 done; 1 a step failed; 2 bad usage or input, nothing trained; 3 a score below --min-ratio;
# 75 stopped by SIGINT/SIGTERM after lora saved its checkpoint: run the same command again to resume.
set -euo pipefail
# shellcheck source=scripts/reproduce_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/reproduce_common.sh"
repro_model="$repro_root/models/gpt2-medium"
repro_data="$repro_root/data/e2e"

usage() {
  repro_help_header "${BASH_SOURCE[0]}"
  echo
  echo "Options:"
  repro_common_help models/gpt2-medium data/e2e
}
while (($#)); do
  case $1 in
    -h | --help) usage && exit 0 ;;
    *)
      repro_common_option "$@" || repro_die "unknown option '$1'" "see scripts/reproduce_e2e.sh --help"
      shift "$repro_shift"
      ;;
  esac
done
repro_options_done

recipe="$repro_root/configs/e2e-gpt2-medium.yaml"
run="$repro_out/e2e-gpt2-medium"
eval_dir="$run/eval-test"
results="$repro_out/e2e-results"
# metric in eval.json, name, scale to the paper's unit (eval.json's BLEU, METEOR, ROUGE-L are fractions), paper
metrics=(bleu nist meteor rouge_l cider)
declare -A label=([bleu]=BLEU [nist]=NIST [meteor]=METEOR [rouge_l]=ROUGE-L [cider]=CIDEr)
declare -A scale=([bleu]=100 [nist]=1 [meteor]=100 [rouge_l]=100 [cider]=1)
declare -A paper=([bleu]=70.4 [nist]=8.85 [meteor]=46.8 [rouge_l]=71.8 [cider]=2.53)

repro_check_lora
repro_check_model "put a HF GPT-2 Medium checkpoint there as configs/e2e-gpt2-medium.yaml's header says"
repro_check_files "put the E2E files there (one \"MR||text\" example a line) as configs/e2e-gpt2-medium.yaml's header says" \
  "$repro_data/train.txt" "$repro_data/valid.txt" "$repro_data/test.txt"
repro_check_out
mapfile -t smoke < <(repro_smoke_sets)
sets=(--set "model.path=$repro_model" --set "data.train=$repro_data/train.txt" --set "data.eval=$repro_data/valid.txt"
  "${smoke[@]}" "${repro_sets[@]}")
eval_args=(--set "data.eval=$repro_data/test.txt" --adapter "$run" --out "$eval_dir")
((repro_smoke)) && eval_args+=(--limit 8)
repro_check_options e2e "$run"

# write_results STATUS [NOTE]: the table (printed and OUT/e2e-results.txt) and OUT/e2e-results.json.
# Lists in below the metrics under --min-ratio times the paper's.
below=()
write_results() {
  local status=$1 note=${2:-} m v shown diff json_metrics="" mrs="" beam=""
  local ej="$eval_dir/eval.json"
  [[ $status == ok ]] || ej=""
  if [[ -n $ej ]]; then
    mrs=$(sed -n 's/^    "meaning_representations": \([0-9]*\).*/\1/p' "$ej")
    beam=$(sed -n 's/^    "beam_size": \([0-9]*\).*/\1/p' "$ej")
  fi
  {
    repro_smoke_banner
    echo "E2E NLG, GPT-2 Medium + LoRA (configs/e2e-gpt2-medium.yaml): $status"
    echo "  run $run"
    [[ -n $ej ]] && echo "  test split: ${mrs:-?} meaning representations, beam ${beam:-?} ($ej)"
    [[ -n $note ]] && echo "  $note"
    printf '  %-8s %12s %8s %11s\n' metric "this run" paper difference
    for m in "${metrics[@]}"; do
      v=""
      [[ -n $ej ]] && v=$(repro_eval_metric "$ej" "$m")
      if [[ -n $v && $v != null ]]; then
        shown=$(repro_scaled "$v" "${scale[$m]}")
        diff=$(repro_diff "$shown" "${paper[$m]}")
        printf '  %-8s %12s %8s %11s' "${label[$m]}" "$shown" "${paper[$m]}" "$diff"
        if repro_below "$shown" "${paper[$m]}"; then
          below+=("$m")
          printf '  below %s x the paper' "$repro_min_ratio"
        fi
        printf '\n'
        json_metrics+="${json_metrics:+,}
    \"$m\": {\"value\": $shown, \"paper\": ${paper[$m]}, \"difference\": $(repro_json_num "$diff")}"
      else
        local why="not run"
        [[ -n $ej ]] && why="not computed"
        printf '  %-8s %12s %8s %11s' "${label[$m]}" "$why" "${paper[$m]}" ""
        [[ $m == meteor && -n $ej ]] && printf '  (needs Java and METEOR 1.5'"'"'s jar: set LORA_METEOR_JAR)'
        printf '\n'
        json_metrics+="${json_metrics:+,}
    \"$m\": {\"value\": null, \"paper\": ${paper[$m]}, \"difference\": null}"
      fi
    done
    echo "  BLEU, METEOR and ROUGE-L in percent (eval.json holds fractions); the paper: Hu et al. 2021, table 3"
  } >"$results.txt"
  cat "$results.txt"
  {
    echo "{"
    echo "  \"pipeline\": \"e2e\","
    echo "  \"status\": \"$status\","
    echo "  \"note\": $(repro_json_str "$note"),"
    echo "  \"smoke\": $([[ $repro_smoke == 1 ]] && echo true || echo false),"
    echo "  \"recipe\": $(repro_json_str "$recipe"),"
    echo "  \"run\": $(repro_json_str "$run"),"
    echo "  \"eval\": $([[ -n $ej ]] && repro_json_str "$ej" || echo null),"
    echo "  \"meaning_representations\": $(repro_json_num "$mrs"),"
    echo "  \"beam_size\": $(repro_json_num "$beam"),"
    echo "  \"units\": \"BLEU, METEOR, ROUGE-L in percent; NIST, CIDEr as is\","
    echo "  \"min_ratio\": $(repro_json_num "$repro_min_ratio"),"
    echo "  \"below_min_ratio\": [$(for m in "${below[@]}"; do printf '%s"%s"' "${sep:-}" "$m"; sep=", "; done)],"
    echo "  \"metrics\": {$json_metrics"
    echo "  }"
    echo "}"
  } >"$results.json"
  echo "results: $results.txt, $results.json"
}

# stop_on RC STEP LOG: the end of the pipeline after a lora step that did not succeed.
stop_on() {
  local rc=$1 step=$2 log=$3
  if repro_stopped "$rc"; then
    write_results interrupted "$step stopped by a signal; run the same command again to continue"
    exit "$REPRO_EXIT_INTERRUPTED"
  fi
  write_results failed "$step exited $rc, see $log: $(repro_log_error "$log")"
  exit "$REPRO_EXIT_FAILED"
}

rc=0
if [[ $(repro_run_state "$run") != finished ]] || repro_eval_needed "$run" "$eval_dir"; then
  echo "e2e: lora validate, for training and for the test-split evaluation (log: $run/validate.log)"
  repro_lora_run "$run/validate.log" validate "$recipe" "${sets[@]}" --set "output.dir=$run" &&
    repro_lora_run "$run/validate.log" validate "$recipe" "${sets[@]}" --set "data.eval=$repro_data/test.txt" \
      --set "output.dir=$run" || rc=$?
  repro_stopped "$rc" && stop_on "$rc" "lora validate" "$run/validate.log"
  ((rc == 0)) || repro_die "lora validate rejected the recipe with these inputs (above, and in $run/validate.log)" \
    "fix what it names; nothing was trained"
fi

repro_train e2e "$recipe" "$run" "${sets[@]}" || rc=$?
((rc == 0)) || stop_on "$rc" "lora train" "$run/train.log"
repro_stopped 0 && stop_on 0 "lora train" "$run/train.log"

if repro_eval_needed "$run" "$eval_dir"; then
  echo "e2e: evaluating on the test split with the recipe's beam search (log: $run/eval-test.log)"
  repro_lora_run "$run/eval-test.log" eval "$recipe" "${sets[@]}" "${eval_args[@]}" || rc=$?
  ((rc == 0)) || stop_on "$rc" "lora eval" "$run/eval-test.log"
  repro_stopped 0 && stop_on 0 "lora eval" "$run/eval-test.log"
else
  echo "e2e: $eval_dir/eval.json is newer than the adapter: not evaluated again (remove it to re-score)"
fi

write_results ok
((${#below[@]} == 0)) || { repro_below_report "${below[@]}"; exit "$REPRO_EXIT_BELOW"; }
