"""Loading text-classification data into a uniform :class:`DataBundle`.

Three sources, one output shape, so the trainer and the pruning methods never care where data came from.
One module per job:

* :mod:`.bundle`: :class:`TaskSpec` and :class:`DataBundle`, the shape every source loads into;
* :mod:`.embedded`: the **embedded** movie-sentiment task (default), downloaded once, verified and cached;
* :mod:`.tables`: **local files**, CSV, TSV, JSON Lines and Parquet;
* :mod:`.glue`: a **GLUE** directory in the standard ``glue_data/<TASK>/{train,dev}.tsv`` layout;
* :mod:`.labels`: the canonical columns and the label maps the local and GLUE loaders share;
* :mod:`.sources`: :func:`load_data`, one string naming any of the three;
* :mod:`.tokenize`: :func:`tokenize_bundle`, the splits as model inputs.

Every user mistake raises :class:`~pruneformer.errors.DataError` with one line naming the problem and the fix.
"""

from .bundle import CLASSIFICATION, PROBLEM_TYPES, REGRESSION, DataBundle, TaskSpec
from .embedded import EMBEDDED_TASK, default_cache_dir, ensure_vader_snippets, load_embedded_sentiment
from .glue import GLUE_TASKS, load_glue
from .sources import EMBEDDED_SOURCES, load_data
from .tables import load_local
from .tokenize import MODEL_INPUT_COLUMNS, tokenize_bundle

__all__ = [
    "CLASSIFICATION", "EMBEDDED_SOURCES", "EMBEDDED_TASK", "GLUE_TASKS", "MODEL_INPUT_COLUMNS", "PROBLEM_TYPES",
    "REGRESSION", "DataBundle", "TaskSpec", "default_cache_dir", "ensure_vader_snippets", "load_data",
    "load_embedded_sentiment", "load_glue", "load_local", "tokenize_bundle",
]
