"""What edgeood writes and reads: detector metadata, file kinds, hashing, atomic writes and the
output names every layer shares."""
