// Generated from sdk/VERSION by `make generate`. DO NOT EDIT.

/** The SDK's version, sent in the user agent of every call. */
export const VERSION = "0.1.1";
