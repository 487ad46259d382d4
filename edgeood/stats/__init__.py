"""Statistics with no graph and no runtime: the stream monitor's test martingale and the OOD
metrics (AUROC, FPR@95, AUPR, false-alarm rate)."""
