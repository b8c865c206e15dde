"""`python -m vnsjax.vns_score`: the command line of `vnsjax.evaluation.vns_score`."""

import sys

from vnsjax.evaluation.vns_score import main

if __name__ == "__main__":
    sys.exit(1 if main(sys.argv[1:])["failed"] else 0)  # a skipped unreadable file makes the run fail
