import sys

from smib_core.cli import main

sys.exit(main())
