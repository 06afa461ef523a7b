"""AgentRouter AuthService: publishes the JSON Web Key Set that verifies AgentRouter's tokens."""

__version__ = "0.1.0"
