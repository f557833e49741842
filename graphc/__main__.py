"""``python -m graphc ...``: the same command line as the ``graphc`` console script."""

import sys

from graphc.cli import main

if __name__ == "__main__":  # importing the module (documentation tools do) runs nothing
    sys.exit(main())
