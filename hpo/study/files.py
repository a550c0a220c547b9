"""What ``hpo train`` and ``hpo predict`` leave on disk, named once for their readers.

``hpo report`` reads run folders and maps by these names; it imports them from here, not
from :mod:`hpo.study.retrain` or :mod:`hpo.study.predict`, so a report needs no torch.
"""

RUN_FORMAT = "landslide-hpo/train-run/1"
"""``format`` of a run folder's ``metrics.json``."""
CHECKPOINT_FILE = "model.pt"
"""The trained model in a run folder."""
METRICS_FILE = "metrics.json"
"""The run's configuration, split, threshold and test metrics."""
CURVES_FILE = "curves.png"
"""Training curves of the run."""
ROC_FILE = "roc.png"
"""The run's test ROC curve."""

NODATA = -9999.0
"""Value of a probability map where the scene has no valid input (the GeoTIFF's nodata)."""
THRESHOLD_TAG = "THRESHOLD"
"""GeoTIFF tag of a probability map: the decision threshold its checkpoint carries."""

__all__ = [
    "CHECKPOINT_FILE",
    "CURVES_FILE",
    "METRICS_FILE",
    "NODATA",
    "ROC_FILE",
    "RUN_FORMAT",
    "THRESHOLD_TAG",
]
