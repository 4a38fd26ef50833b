"""The wire contract of kindsync as msgspec Structs.

Only msgspec and the standard library are imported here, so the app, the
workers, the tests and a reference client can all share these types.
"""
