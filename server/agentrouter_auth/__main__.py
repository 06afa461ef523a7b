"""`python -m agentrouter_auth` is the `agentrouter-auth` command."""

import sys

from agentrouter_auth.cli import main

sys.exit(main())
