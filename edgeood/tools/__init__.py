"""The commands built on a loaded detector: eval, profile, inspect, watch and the plots."""
