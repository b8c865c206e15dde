"""Experiments: one command each that generates data, trains through `vnsjax.train` and evaluates through
`vnsjax.evaluation.runner`, and writes a table. `python -m vnsjax.experiments.miniature`: the paper's comparison
(SAM, fine-tuned SAM, HQ-SAM, VNS-SAM and its Tab. VI ablations) on synthetic data."""
