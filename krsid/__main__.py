import sys

from krsid.cli import main

sys.exit(main())
