"""What the tests and `make bench` both need to stand a server up: free loopback ports
(`ports`), KEK files and keys seeded into a store (`keys`), and a throw-away PostgreSQL server
(`postgres`).

The benchmark imports this package as `tests.support` (`make bench` runs `python -m bench.run`
from the repository root), so neither re-implements the other's set-up and nothing edits
`sys.path`. It imports the server's packages and nothing else of the tests.
"""

from tests.support.keys import seed, write_kek
from tests.support.ports import free_port
from tests.support.postgres import PostgresServer, PostgresUnavailableError

__all__ = ["PostgresServer", "PostgresUnavailableError", "free_port", "seed", "write_kek"]
