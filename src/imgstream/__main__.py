import sys

from imgstream.cli import main

sys.exit(main())
