"""`tars`: the AgentRouter API's generated code, under the documentation's import names."""
