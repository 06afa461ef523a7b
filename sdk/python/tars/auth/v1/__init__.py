"""AuthService's messages (`auth_pb2`) and Connect client (`auth_connect`), generated from
the contract under the names the AgentRouter documentation uses."""
