// Generated from sdk/VERSION by `make generate`. DO NOT EDIT.

package agentrouter

// Version is the SDK's version, sent in the User-Agent of every call.
const Version = "0.1.1"
