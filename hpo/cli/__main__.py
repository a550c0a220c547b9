"""``python -m hpo.cli``: the ``hpo`` command without its console script."""

import sys

from hpo.cli import main

sys.exit(main())
