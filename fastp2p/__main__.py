import sys

from fastp2p.cli import main

sys.exit(main())
