"""``python -m agent`` is ``voice-agent``."""

import sys

from agent.cli import main

sys.exit(main())
