"""`python -m edgeood.cli`."""
import sys

from edgeood.cli.app import main

sys.exit(main())
