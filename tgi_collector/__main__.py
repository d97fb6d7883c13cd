"""``python -m tgi_collector``: the same as the ``tgi-collector`` command."""

import sys

from tgi_collector.cli import main

sys.exit(main())
