"""``pruneformer compare``: every candidate trained on the same dense models, seeds and budget (``flow``),
then measured side by side and turned into a recommendation (``report``, ``outputs``)."""
