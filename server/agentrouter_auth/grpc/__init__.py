"""The gRPC listener (grpcio aio): the servicer's RPCs, health and reflection, within limits.

Mirrors `http/`, one job per module:

- `adapter`: the servicer's RPCs as grpcio method handlers, bound by `rpc.bind` (no servicer
  class known here): each writes a rendered answer's stored bytes;
- `wrapping`: serves every registered handler wrapped, built once per method;
- `budget`: `CallBudget`, the calls one worker runs at once (calls, health Watch, health Check,
  reflection), and the share of each that one connection and one client address may hold;
- `guard`: `RequestGuard`, each call's deadline to deliver its request, the calls a
  connection may have waiting for theirs, and an answer to a call that ends without one;
- `resets`: `ResetMonitor`, closing a connection that cancels call after call (rapid reset);
- `recording`: the answered calls of the service counted in metrics (`protocol="grpc"`);
- `health`: grpc.health.v1 (overall, the service, its keyring entry) and reflection;
- `server`: `start_grpc_server`, assembling the above: channel options, TLS, the bind.

The listener faces clients that may be hostile, so everything a client can hold has a bound
(`GrpcLimits`): HTTP/2 streams per connection, calls per process, the time a call gets to
deliver its request, connections, their idle time and age. grpcio enforces most of them
(`server.server_options`); the three it lacks are `budget`, `guard` and `resets`.
"""
