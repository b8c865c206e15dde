import sys

from vnsjax.demo.server import main

sys.exit(main())
