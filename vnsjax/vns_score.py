"""`python -m vnsjax.vns_score`: the command line of `vnsjax.evaluation.vns_score`."""

import sys

from vnsjax.evaluation.vns_score import main

if __name__ == "__main__":
    main(sys.argv[1:])
