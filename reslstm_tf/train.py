"""Deprecated: the former home of training; import from `reslstm_tf.training` instead.

Kept only until every caller imports from the new homes: the loop is
`reslstm_tf.training` (`Trainer`, `train`, `run_training`, `RunConfig`), the feature
inputs `reslstm_tf.data.feature_sets`, the run folder's file names `reslstm_tf.runs`.
"""

from reslstm_tf.data.feature_sets import (  # noqa: F401
    find_feature_cache,
    load_features,
    load_npz_features,
    numpy_dataset,
    select_modality,
    synthetic_features,
    write_npz_features,
)
from reslstm_tf.data.feature_sets import split_dataset as feature_dataset  # noqa: F401
from reslstm_tf.models import MODALITIES, build_model  # noqa: F401
from reslstm_tf.runs import CHECKPOINT_DIR as CHECKPOINT_SUBDIR  # noqa: F401
from reslstm_tf.runs import CONFIG_FILE, FINAL_MODEL, FINAL_WEIGHTS, HISTORY_FILE  # noqa: F401
from reslstm_tf.runs import SUMMARY_DIR as SUMMARY_SUBDIR  # noqa: F401
from reslstm_tf.training import *  # noqa: F401,F403
from reslstm_tf.training.inputs import (  # noqa: F401
    check_labels,
    check_shapes,
    dataset_shapes,
    epoch_batches,
    epoch_seed,
    model_input_shapes,
)
from reslstm_tf.training.setup import (  # noqa: F401
    make_learning_rate,
    make_optimizer,
    make_strategy,
    mixed_precision_policy,
    task_info,
)
from reslstm_tf.training.trainer import check_model_dir  # noqa: F401
