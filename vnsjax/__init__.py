"""vnsjax: SAM, HQ-SAM and VNS-SAM in JAX / Flax NNX."""
