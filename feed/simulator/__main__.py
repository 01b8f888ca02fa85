import sys

from feed.simulator.cli import main

sys.exit(main())
