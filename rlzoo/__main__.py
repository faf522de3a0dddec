"""``python -m rlzoo``: the command line, for launchers (``torchrun -m rlzoo``, ``accelerate launch -m rlzoo``)."""

import sys

from rlzoo.cli import main

sys.exit(main())
