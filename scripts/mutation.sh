#!/usr/bin/env bash
# Mutation testing of sgtlab's science core with mutmut (a dev tool, not a runtime dependency:
# `pip install -e '.[mutation]'`). Each module runs in its own scratch copy of the repository
# (src/, tests/, pyproject.toml) with a [tool.mutmut] section that mutates that module only and
# selects the fast tests that cover it; mutmut then runs, per mutant, only the selected tests that
# reach the mutated function. Prints, per module: mutants, killed, survived, equivalent (listed in
# docs/testing.md), score = killed / (mutants - equivalent), and the wall time. Each mutant's tests
# run fastest first (scripts/mutmut_fastest_first.py): mutmut stops at the first failing test.
#
#   scripts/mutation.sh                    # every module of the core (54 min on an idle 2-core machine)
#   scripts/mutation.sh attacks/pgd saliency   # some modules
#   PARALLEL=2 JOBS=1 MUTATION_DIR=/tmp/m scripts/mutation.sh ...   # the defaults: 2 modules at once, 1 mutant process each
#   SCORE_ONLY=1 scripts/mutation.sh attacks/pgd   # re-score a finished run (e.g. after listing equivalents)
#   RERUN=1 scripts/mutation.sh attacks/pgd        # after adding tests: re-run a finished run's survivors
#
# Raise statements (error-message text) are left out of the run (do_not_mutate_patterns).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# the project's virtual environment when there is one (a bare `python` may lack torch)
if [ -z "${PYTHON:-}" ] && [ -x "$ROOT/.venv/bin/python" ]; then PY=$ROOT/.venv/bin/python; else PY=${PYTHON:-python}; fi
JOBS=${JOBS:-1}
PARALLEL=${PARALLEL:-2}
WORK=${MUTATION_DIR:-${TMPDIR:-/tmp}/sgtlab-mutation}
# one thread per test process (tests/conftest.py reads it): the selected tests use tiny models, and
# on a busy machine two threads make each small op many times slower (measured: 8.3 s -> 0.6 s)
export SGTLAB_TEST_THREADS=${SGTLAB_TEST_THREADS:-1} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
"$PY" -c "import mutmut" 2>/dev/null || "$PY" -m pip install -q "mutmut==3.8.1"

# module -> the fast tests that cover it (slow-marked tests are deselected; '%' stands for a space)
tests_for() {
  case "$1" in
    stats) echo tests/test_stats.py ;;
    saliency) echo tests/test_saliency.py tests/test_science_methods.py tests/test_lean_paths.py ;;
    train/methods/*) echo tests/test_science_methods.py tests/test_methods.py tests/test_cuda_graphs.py -k not%resume ;;
    train/loop) echo tests/test_train_options.py tests/test_cuda_graphs.py ;;
    attacks/pgd|attacks/fgsm|attacks/mifgsm) echo tests/test_science_attacks.py ;;
    attacks/base) echo tests/test_science_attacks.py tests/test_science_attack_base.py ;;
    # the sweep on hand-built models (tests/test_robustness.py's other tests train a model first)
    evaluate/robustness) echo tests/test_science_attacks.py tests/test_science_robustness.py \
      tests/test_robustness.py::test_fold_counts_a_folded_fool_from_the_next_grid_eps_on \
      tests/test_robustness.py::test_fold_from_scratch_changes_that_eps_only_and_refuses_clashes \
      tests/test_headline_suite.py::test_add_ensemble_and_folds_that_ran_on_some_images \
      tests/test_cuda_graphs.py ;;
    # the suite on hand-built models (the others attack a trained model)
    evaluate/headline_suite) echo tests/test_headline_suite.py \
      -k not%trained%and%not%every_headline%and%not%autoattack%and%not%checks_do_not ;;
    evaluate/masking_checks) echo tests/test_science_masking_checks.py tests/test_masking_checks_flag.py ;;
    data/cifar) echo tests/test_unpickler.py tests/test_data.py tests/test_data_formats.py tests/test_untrusted_properties.py -k cifar%or%unpickl%or%pickle ;;
    data/mnist|data/mnist5k|data/base) echo tests/test_data.py tests/test_untrusted_properties.py ;;
    # SmoothGrad: the tests on hand-built models (the others train a model per mutant)
    explain/smoothgrad) echo tests/test_explain.py tests/test_science_saliency.py \
      -k not%model_mode%and%not%dropout_off%and%not%batches_give%and%not%cli_ ;;
    explain/*) echo tests/test_explain.py tests/test_science_saliency.py ;;
    # the metric formulas: the unit tests only (the tests on a trained model would retrain it per mutant)
    evaluate/saliency_metrics/*) echo tests/test_interpretability.py tests/test_saliency_evidence.py tests/test_science_saliency.py \
      -k not%metrics_api%and%not%decoy_mnist%and%not%sanity_check_flags%and%not%road_imputation ;;
    evaluate/interpretability) echo tests/test_interpretability.py tests/test_saliency_evidence.py ;;
    # the engine and the metrics on hand-built models (not the tests that train a model, nor the
    # 20-second AlexNet cases of the local AOPC: the smaller local nets cover the same paths)
    evaluate/perturb|evaluate/perturbation_metrics|evaluate/road|evaluate/sanity_checks|fast/aopc_local)
      echo tests/test_interpretability.py tests/test_saliency_evidence.py tests/test_science_evaluate.py \
      -k not%metrics_api%and%not%decoy_mnist%and%not%sanity_check_flags%and%not%alexnet%and%not%pictures%and%not%imputation_stops ;;
    # the hostile-input round (issue 28): the in-process tests only (the command-line cases run in
    # forked children or `python -m sgtlab` subprocesses, which mutmut's per-function test selection
    # does not see, and its stats run fails on them)
    io) echo tests/test_io.py tests/test_mutation_io.py \
      tests/test_locks.py::test_a_second_holder_is_refused_and_the_lock_ends_with_its_holder \
      tests/test_hostile_inputs_2.py::test_atomic_writes_and_reads_do_not_follow_links ;;
    validate) echo tests/test_mutation_validate.py tests/test_untrusted_properties.py::test_set_overrides_and_preset_validation \
      tests/test_untrusted_properties.py::test_any_preset_value tests/test_untrusted_properties.py::test_eps_grid_parser ;;
    data/spec) echo tests/test_data_spec.py ;;
    data/folder|data/arrays|data/pcam|data/cache) echo tests/test_mutation_data.py \
      tests/test_data_formats.py::test_npz_bad_contents_refused tests/test_data_formats.py::test_uint8_loader_gives_the_float_batches \
      tests/test_data_formats.py::test_image_folder_corrupt_file_named_or_skipped \
      tests/test_data_formats.py::test_image_folder_resize_crop_cache_reuse_and_rebuild \
      tests/test_data_formats.py::test_image_folder_with_its_own_split_and_grey tests/test_data_formats.py::test_image_folder_bad_specs \
      tests/test_hostile_inputs_2.py::test_the_cache_is_one_per_resolved_folder_locked_and_cleaned ;;
    # run folders written by the tests, the runner's stages replaced by stand-ins (the tests of whole
    # reproduce runs train on MNIST per mutant)
    experiments/runner|experiments/store) echo tests/test_mutation_experiments.py tests/test_report_flags.py \
      tests/test_final_loss_rows.py::test_final_loss_prefers_the_clean_ce_then_the_adversarial_ce_then_the_total \
      tests/test_hostile_inputs_2.py::test_a_damaged_per_image_table_is_one_line ;;
    # the report on hand-made experiment folders (not the publish case, which runs the CLI)
    reporting/comparisons|reporting/text) echo tests/test_mutation_reporting.py tests/test_report_text.py \
      tests/test_saliency_findings.py tests/test_report_flags.py -k not%publish ;;
    *) echo "no test selection for module $1" >&2; return 1 ;;
  esac
}

# the science core, the modules with the most mutants first (so that the last ones to start are short)
CORE=(evaluate/perturbation_metrics evaluate/robustness evaluate/masking_checks saliency train/loop
      stats attacks/base evaluate/perturb fast/aopc_local evaluate/road attacks/pgd evaluate/sanity_checks
      data/cifar evaluate/saliency_metrics/similarity data/mnist train/methods/scaat
      evaluate/saliency_metrics/map_stats attacks/mifgsm train/methods/_shared train/methods/adversarial
      train/methods/asgt attacks/fgsm evaluate/saliency_metrics/faithfulness train/methods/sga
      train/methods/sgt explain/smoothgrad train/methods/st)
MODULES=("$@")
[ ${#MODULES[@]} -eq 0 ] && MODULES=("${CORE[@]}")

# equivalent mutants: names in backquotes at the start of a list item of docs/testing.md
equivalents() { grep -oE '^- `[^`]+__mutmut_[0-9]+`' "$ROOT/docs/testing.md" 2>/dev/null | sed -E 's/^- `(.*)`$/\1/' || true; }

printf '%-28s %7s %6s %8s %5s %6s %7s %7s\n' module mutants killed survived equiv other score seconds
run_module() {
  local mod=$1 tests dir names t0 secs
  tests=$(tests_for "$mod")
  dir="$WORK/${mod//\//_}"
  if [ -n "${SCORE_ONLY:-}" ]; then
    equivalents > "$dir/equivalent.txt"
    "$PY" "$dir/score.py" "$dir" "$mod" "$(cat "$dir/seconds")"
    return
  fi
  if [ -n "${RERUN:-}" ]; then
    # after adding tests: copy tests/ into the finished run and re-run only its survivors (the test
    # selection is unchanged, so mutmut keeps the other verdicts; new tests get their stats first)
    rm -rf "$dir/tests" && cp -r "$ROOT/tests" "$dir/" && find "$dir/tests" -name __pycache__ -prune -exec rm -rf {} +
    names=$(cut -d: -f1 "$dir/survivors.txt")
    t0=$(date +%s)
    if [ -n "$names" ]; then
      (cd "$dir" && PYTHONPATH="$dir/src:$ROOT/scripts" "$PY" -m mutmut run --max-children "$JOBS" $names > "$dir/rerun.log" 2>&1) || true
    fi
    secs=$(( $(cat "$dir/seconds") + $(date +%s) - t0 ))
    echo "$secs" > "$dir/seconds"
    (cd "$dir" && PYTHONPATH="$dir/src:$ROOT/scripts" "$PY" -m mutmut results --all true > "$dir/results.txt" 2>/dev/null) || true
    equivalents > "$dir/equivalent.txt"
    "$PY" "$dir/score.py" "$dir" "$mod" "$secs"
    return
  fi
  rm -rf "$dir" && mkdir -p "$dir"
  cp -r "$ROOT/src" "$ROOT/tests" "$ROOT/pyproject.toml" "$dir/"
  find "$dir" -name __pycache__ -prune -exec rm -rf {} +
  {
    echo
    echo "[tool.mutmut]"
    echo "source_paths = [\"src\"]"
    echo "only_mutate = [\"src/sgtlab/$mod.py\"]"
    echo "pytest_add_cli_args_test_selection = [$(printf '"%s", ' $tests | tr '%' ' ')]"
    echo "pytest_add_cli_args = [\"-q\", \"-m\", \"not slow\", \"-p\", \"no:cacheprovider\", \"-p\", \"no:randomly\", \"-p\", \"mutmut_fastest_first\"]"
    echo "do_not_mutate_patterns = ['^\\s*raise [A-Za-z.]*(Error|Diverged)\\(']"
    echo "process_isolation = \"forkserver\""
    echo "use_git_change_detection = false"
  } >> "$dir/pyproject.toml"
  t0=$(date +%s)
  (cd "$dir" && PYTHONPATH="$dir/src:$ROOT/scripts" "$PY" -m mutmut run --max-children "$JOBS" > "$dir/run.log" 2>&1) || true
  secs=$(( $(date +%s) - t0 ))
  echo "$secs" > "$dir/seconds"
  (cd "$dir" && PYTHONPATH="$dir/src:$ROOT/scripts" "$PY" -m mutmut results --all true > "$dir/results.txt" 2>/dev/null) || true
  equivalents > "$dir/equivalent.txt"
  cat > "$dir/score.py" <<'PY'
import sys
from pathlib import Path
d, mod, secs = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
equiv = set((d / "equivalent.txt").read_text().split())
status = {}
for line in (d / "results.txt").read_text().splitlines():
    if ": " in line:
        name, st = line.strip().rsplit(": ", 1)
        status[name] = st
killed = sum(s in ("killed", "timeout") for s in status.values())
eq = [n for n, s in status.items() if n in equiv and s not in ("killed", "timeout")]
surv = [n for n, s in status.items() if s not in ("killed", "timeout") and n not in equiv]
other = sum(s not in ("killed", "timeout", "survived") for s in status.values())
total = len(status) - len(eq)
score = f"{100 * killed / total:.1f}%" if total else "-"
print(f"{mod:<28} {len(status):7d} {killed:6d} {len(surv):8d} {len(eq):5d} {other:6d} {score:>7} {secs:>7}")
(d / "survivors.txt").write_text("".join(f"{n}: {status[n]}\n" for n in surv))
PY
  "$PY" "$dir/score.py" "$dir" "$mod" "$secs"
}

# PARALLEL modules at once (default 2), each with JOBS mutant processes (default 1): mutmut's
# per-module set-up (the clean run, the coverage run) is serial, so two modules keep both cores busy
start=$(date +%s)
for mod in "${MODULES[@]}"; do
  tests_for "$mod" > /dev/null  # an unknown module fails here, before any work
  run_module "$mod" &
  while [ "$(jobs -rp | wc -l)" -ge "$PARALLEL" ]; do wait -n || true; done
done
wait
echo "wall time: $(( $(date +%s) - start )) s for ${#MODULES[@]} module(s) (PARALLEL=$PARALLEL, JOBS=$JOBS)"
echo "survivors (not killed, not listed as equivalent): $WORK/<module>/survivors.txt; logs: run.log"
