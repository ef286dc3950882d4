"""`python -m percept.cli ...`: the `percept` command without its console script."""

import sys

from percept.cli import main

sys.exit(main())
