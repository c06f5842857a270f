#!/usr/bin/env bash
# Mutation testing (mutmut 2) of the core modules (training loop and checkpoints, data windowing, zoo
# verification, evaluation probes, objectives, augmentations, the restricted unpickler, the CPU
# GRU paths, the compiled kernels' Python side, embedding's input path), each against its fast
# test subset.
#   bash scripts/mutation.sh [MODULE...]     # default: every module below
# mutmut 2 rewrites the mutated file in place, so it runs in a copy of the tree (MUTDIR, default
# /tmp/primus-mutation) that PYTHONPATH puts before the editable install: the checkout is never
# touched and other tests can run meanwhile. Results: MUTDIR/.mutmut-cache (`mutmut results`
# there) and MUTDIR/summary.txt. Do not run `mutmut show` in MUTDIR while a run is going: it
# re-reads the file into the cache's lines while a mutant is applied to it, and the run then
# stops with "Attribute Mutant.line is required" (read progress from the run's output instead).
# Too slow for every CI run (minutes per module on 2 cores); benchmarks/mutation.md holds the
# last summary and the review of every surviving mutant.
# Large modules are scoped with --use-coverage: only the lines their test subset runs (the
# probes of evaluate.py, the windowing/resampling of data.py, the checks of zoo.py) are mutated.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$PWD/.venv/bin/python}
MUTDIR=${MUTDIR:-/tmp/primus-mutation}
mkdir -p "$MUTDIR"
tar --exclude=./.venv --exclude=./.git --exclude=./runs --exclude='*.pyc' -cf - . | tar -xf - -C "$MUTDIR"
cd "$MUTDIR"
export PYTHONPATH="$MUTDIR:$MUTDIR/plugins"
export PRIMUS_HYPOTHESIS_EXAMPLES=${PRIMUS_HYPOTHESIS_EXAMPLES:-10}  # per mutant: fewer examples
export PRIMUS_TEST_HOME="$MUTDIR/home"  # one PRIMUS_HOME (teacher cache) for every mutant's tests
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
SOCK=$(mktemp -u /tmp/primus-mutation.XXXXXX)

# module -> its tests (pytest arguments; hypothesis properties picked by node id)
P=tests/test_properties.py
declare -A TESTS=(
  [augment]="tests/test_guard_augment.py tests/test_augmentations.py $P::test_augmentations_keep_shape_dtype_and_are_seeded $P::test_value_preserving_augmentations_keep_the_multiset_of_values $P::test_permutation_indices_are_permutations_of_contiguous_pieces $P::test_time_warp_positions_are_monotone_from_start_to_end $P::test_random_draw_statistics"
  [objectives]="tests/test_losses.py"
  [evaluate]="tests/test_guard_eval.py"
  [data]="tests/test_guard_data.py $P::test_resampled_length_is_the_ceiling_of_n_times_the_ratio $P::test_constants_and_trends_survive_resampling_up_to_the_edges $P::test_no_energy_above_the_new_nyquist $P::test_tones_below_both_nyquists_keep_their_amplitude $P::test_sliding_windows_count_placement_and_padding $P::test_gather_windows_is_slicing_with_zero_padding"
  [zoo]="tests/test_guard_zoo.py tests/test_zoo.py"
  [safe_pickle]="tests/test_guard_pickle.py"
  [checkpoint]="tests/test_checkpoint.py tests/test_guard_train.py::test_resume_restores_weights_optimiser_and_step_counter tests/test_train.py::test_exact_resume tests/test_train.py::test_resume_from_an_earlier_checkpoint_does_not_repeat_steps"
  [trainer]="tests/test_trainer.py"
  [gru]="tests/test_gru_scan.py tests/test_encoder.py tests/test_native.py"
  [gru_training]="tests/test_gru_scan.py tests/test_encoder.py tests/test_native.py"
  [native]="tests/test_native.py"
  [embed]="tests/test_embed_memory.py tests/test_embed.py tests/test_embed_api.py tests/test_guard_data.py $P::test_embedding_input_gives_finite_embeddings_or_one_data_error $P::test_embedding_rejects_non_numbers_and_complex tests/test_embed_property.py::test_embedding_api_gives_finite_vectors_or_a_data_error"
)
declare -A FILES=(
  [augment]="plugins/primus_objectives/augment.py"
  [objectives]="plugins/primus_objectives/objectives.py,plugins/primus_objectives/infonce.py,plugins/primus_objectives/neighbours.py"
  [evaluate]="primus_core/evaluation/protocol.py"
  [data]="primus_core/data/windows.py"
  [zoo]="primus_core/zoo/hub.py"
  [safe_pickle]="plugins/primus_datasets/safe_pickle.py"
  [checkpoint]="primus_core/training/checkpoint.py"
  [trainer]="primus_core/training/trainer.py"
  [gru]="primus_core/data/gru_scan.py,plugins/primus_stackrnn/gru.py"
  [gru_training]="plugins/primus_stackrnn/gru.py"  # the training GRU alone, in its own MUTDIR
  [native]="primus_core/native.py,plugins/primus_stackrnn/pool.py"
  [embed]="primus_core/data/embed.py"
)
# large modules: only the functions the issue names (scripts/mutation_scope.py)
declare -A SCOPE=(
  [evaluate]="metrics,training_steps,warmup_cosine,CosineHead,head_lr,fit_head,batch_indices,knn_predict,split_for_seed,shot_indices"
  [data]="resample,resampled_length,sliding_windows,gather_windows,centred_starts,label_runs,recording_windows,to_contract_channels,unit_factor,check_finite,check_columns"
  [trainer]="Pretrainer,epoch_order,select_corpus,teacher_targets,share_temperatures,compat_hash,__init__,state,restore,augment,train_step,validate,run_loop,read_losses,end_of_epoch,after_validation"
  [embed]="read_input,read_npz,read_csv,prepare_windows,check_finite,batched_outputs,embed_windows"
  [zoo]="check_file,cached_hub_snapshot,pull_hub,expected_local_files,installed,check_local_dir,_install,_staging_dir,pull_shipped,pull,cached_dir,verify,_complete"
)

modules=("$@")
[ ${#modules[@]} -eq 0 ] && modules=(augment evaluate data zoo objectives safe_pickle checkpoint trainer gru native embed)

"$PY" scripts/mutation_runner.py serve "$SOCK" &
server=$!
trap 'kill $server 2>/dev/null; rm -f "$SOCK"' EXIT
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.2; done

for m in "${modules[@]}"; do
  # shellcheck disable=SC2206
  args=(-x -q -p no:cacheprovider -p no:randomly ${TESTS[$m]})
  runner="$PY scripts/mutation_runner.py run $SOCK $(printf '%q ' "${args[@]}")"
  extra=()
  if [ -n "${SCOPE[$m]:-}" ]; then
    "$PY" scripts/mutation_scope.py "${FILES[$m]}" "${SCOPE[$m]}"
    "$PY" -m coverage run --include="${FILES[$m]}" -m pytest "${args[@]}" >/dev/null
    "$PY" scripts/mutation_scope.py "${FILES[$m]}" "${SCOPE[$m]}" --keep
    extra=(--use-coverage)
  fi
  # one mutmut run per file: mutmut 2 crashes ("Mutant.line is required") on some multi-file runs
  IFS=, read -r -a files <<< "${FILES[$m]}"
  for f in "${files[@]}"; do
    echo "== $m: $f against: ${args[*]}"
    "$PY" -m mutmut run --paths-to-mutate "$f" --runner "$runner" \
      --tests-dir tests --test-time-base 20 --test-time-multiplier 3 --no-progress \
      "${extra[@]}" || true  # mutmut exits non-zero when mutants survive
  done
done
"$PY" -m mutmut results > summary.txt || true
cat summary.txt
