#!/usr/bin/env python3
"""The model build: turn weights and images into a model set in a model repository (`make build` runs this).

    python build/build_models.py --profile fashion                      # the offline default set
    python build/build_models.py --profile natural --images DIR         # EfficientNet-Lite0 on natural photos
    python build/build_models.py --profile custom --teacher model.pt --images DIR --size 224 [--labels FILE]
    python build/build_models.py --profile imagenet --images DIR [--weights PATH|random]
    python build/build_models.py --help                                 # every option

The pipeline itself is the library's (iqaguard.pipeline, also `python -m iqaguard.pipeline`); this
folder is the build's place in the checkout: build -> model_repository -> server -> client. It is a
folder of scripts, never an importable package (a package named `build` would shadow PyPA's build).
"""

import sys

from iqaguard.pipeline import main

if __name__ == "__main__":
    sys.exit(main())
