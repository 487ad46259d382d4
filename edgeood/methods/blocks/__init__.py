"""Graph blocks that scoring methods share, each with its NumPy reference: nearest-neighbour
search over a bank (nearest), exact histograms (histogram), lookup in a sorted reference, the
ECDF (ecdf). The registry never takes this package for methods: it registers nothing."""
