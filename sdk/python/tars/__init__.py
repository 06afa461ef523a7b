"""`tars`: the AgentRouter API's documented import names, aliasing the generated modules."""
