"""Ablations of the Res-LSTM head on cached segment features: baselines, depth, width, T, fusion.

The protocol of Lakhal et al. (2018, sections 4.2-4.4), run on a small feature cache on a CPU:

* **Validation inside the data.** Every accuracy is measured on clips held out from the
  cached set, never on the training clips: stratified k-fold cross-validation (`"cv"`,
  mean and std over folds x seeds) or one fixed stratified hold-out split (`"holdout"`,
  mean and std over seeds) for the expensive sweeps. Splits use a fixed split seed, so
  every architecture sees exactly the same folds; the training seed only changes the
  initialisation and dropout.
* **Fixed training budget.** Adam, a fixed number of epochs, no early stopping (nothing
  ever looks at the validation clips before the final evaluation). Training runs through
  `reslstm_tf.training.Trainer`: each epoch is a shuffle seeded by (seed, epoch) in
  whole batches (the last partial batch of an epoch is left out, a different one each
  epoch), so every run is reproducible from its seed.
* **Baselines** on the same features: mean-pooled features + multinomial logistic
  regression (`LogisticRegression`, numpy), plain stacked LSTMs and Res-LSTMs of depth 2-4.
* **Sweeps**: hidden size H per depth (LSTM vs Res-LSTM), number of LSTM steps T (step t
  reads segment `step_segment_map(T, K)[t]`), and two-stream fusions (sum, product,
  weighted at mid and late level) beside RGB-only and flow-only.

Modules, in import order (each imports only from those above it):

* `config`: `AblationError`, `AblationConfig` (heads train with
  `reslstm_tf.training.TrainOptions`, defaults `head_options`), `RunSpec`, `plan_runs`.
  The settings and the plan sit apart from the runner (not in `ablation` as the package
  layout first suggested) because `splits`, `baselines` and `report` need them too and
  `ablation` imports those three: one shared bottom module keeps the imports acyclic.
* `splits`: `stratified_folds`, `stratified_holdout`, `splits_for`.
* `baselines`: `LogisticRegression` on mean-pooled features.
* `statistics`: paired differences over the same folds and seeds (the corrected
  repeated-CV t interval) and McNemar's exact test on pooled out-of-fold predictions.
* `report`: `summarise`, `select_best`, `results_markdown` (from the run rows: accuracies
  with 95 % intervals, the paired comparisons); the pairing of runs the study's report
  shares. `report_figures`: `plot_results`, one figure a sweep. `report_files`: runs.csv
  in and out, results.json/.md, `report_from_csv`.
* `runner`: the one experiment runner, shared by the ablation and the study: `HeadRunner`
  (recurrent heads on features through `reslstm_tf.training.Trainer`, one `Trainer` per
  model config, `reset(seed)` per run; stored views read by `view_schedule`), the run logs
  and `run_plan`.
* `ablation`: the ablation's recipes on the runner: `load_data` (the caches, read by
  `reslstm_tf.data.feature_sets`), `train_and_evaluate`, `run_ablation`, `train_final`.
* `study` (the whole study on a video folder, on the same runner) and its parts:
  `study_clips` (further clip specs, test-time views), `study_streams` (stored views,
  features, heads, fine-tuning), `study_runs` (one run and its `runs.jsonl` row),
  `study_variants` (test-time augmentation and seed ensembles from stored probabilities),
  `study_results` (results by clip spec, paired differences, selection), `study_report`
  (its report of earlier outputs) and `study_publish` (the selected entries, trained on
  every clip; `reslstm-study` publishes them).
* `publish`: `cast_weights`, `train_selected_head` (the selected head, ready for
  `reslstm_tf.zoo.publish`, which sits a floor higher and is called by the user).

Example:
    ```python
    from reslstm_tf.experiments import AblationConfig, run_ablation

    config = AblationConfig(experiments=("baselines", "depth"), seeds=1)
    results = run_ablation("cache/skateboard_i3d_rgb", "runs/ablation", config)
    results["best"]  # the selected recurrent RGB head
    ```
"""

from reslstm_tf.experiments.ablation import (
    load_data,
    run_ablation,
    train_and_evaluate,
    train_final,
)
from reslstm_tf.experiments.baselines import LogisticRegression
from reslstm_tf.experiments.config import (
    EXPERIMENTS,
    FUSIONS,
    PROTOCOLS,
    RNN_ARCHS,
    AblationConfig,
    AblationError,
    RunSpec,
    head_options,
    plan_runs,
)
from reslstm_tf.experiments.publish import cast_weights, train_selected_head
from reslstm_tf.experiments.report import results_markdown, select_best, summarise
from reslstm_tf.experiments.report_figures import plot_results
from reslstm_tf.experiments.report_files import report_from_csv
from reslstm_tf.experiments.runner import HeadRunner, RunLog, run_plan
from reslstm_tf.experiments.splits import splits_for, stratified_folds, stratified_holdout

__all__ = [
    "EXPERIMENTS",
    "FUSIONS",
    "PROTOCOLS",
    "RNN_ARCHS",
    "AblationConfig",
    "AblationError",
    "HeadRunner",
    "LogisticRegression",
    "RunLog",
    "RunSpec",
    "cast_weights",
    "head_options",
    "load_data",
    "plan_runs",
    "plot_results",
    "report_from_csv",
    "results_markdown",
    "run_ablation",
    "run_plan",
    "select_best",
    "splits_for",
    "stratified_folds",
    "stratified_holdout",
    "summarise",
    "train_and_evaluate",
    "train_final",
    "train_selected_head",
]
