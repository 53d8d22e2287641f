import sys

from map3d.cli import main

sys.exit(main())
