"""``python -m gpuact.bench``: the same as the ``gpuact-bench`` console script."""

import sys

from gpuact.bench import main

sys.exit(main())
