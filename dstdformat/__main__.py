"""``python -m dstdformat`` is the ``dstd`` command."""

import sys

from .cli.main import main

sys.exit(main())
