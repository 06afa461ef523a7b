"""The one root of every error this project raises on purpose.

The CLI reports any `AgentRouterAuthError` as one line on stderr (its message) and exits
non-zero, so a new error type needs no list to be kept in step: deriving from the root is
enough. Classes keep a built-in second base (`ValueError`, `OSError`, ...) where callers catch
that.
"""

from __future__ import annotations


class AgentRouterAuthError(Exception):
    """An error of agentrouter-auth whose message is fit to show an operator in one line."""
