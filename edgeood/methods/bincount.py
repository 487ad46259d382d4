"""The former name of the histogram block (edgeood.methods.blocks.histogram), kept for its
importers."""
from edgeood.methods.blocks.histogram import (  # noqa: F401
    SCATTER_MARGIN, SCATTER_MIN_VALUES, Row, bin_estimator, edges_constant, graph_bin_counts,
    graph_raw_counts, histogram_form, raw_to_bins, settle_forms)
