"""What edgeood writes and reads: detector metadata (metadata: typed, validated, migrated;
truth: checked against the graph, which decides), file kinds, hashing and atomic writes
(files), the one tensor description (tensors) and the output names every layer shares
(names)."""
