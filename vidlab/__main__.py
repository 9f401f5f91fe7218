"""``python -m vidlab run ...``: see :mod:`vidlab.run`."""
import sys

from vidlab.run import main

sys.exit(main())
