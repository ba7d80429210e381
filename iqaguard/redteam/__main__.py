"""`python -m iqaguard.redteam`: see iqaguard.redteam.run."""

import sys

from iqaguard.redteam.run import main

sys.exit(main())
