#!/usr/bin/env python3
"""Build a model set into the model repository: a thin entry over `python -m iqaguard.pipeline`.

    python build/build_models.py --profile fashion
    python build/build_models.py --profile imagenet --images /data/photos [--weights PATH|random]
"""

import sys

from iqaguard.pipeline import main

if __name__ == "__main__":
    sys.exit(main())
