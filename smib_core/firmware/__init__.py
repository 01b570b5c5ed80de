"""Firmware delivery: materialise library files into the served folder and serve them.

`names` holds the one file-name rule, `materialise` copies a library file from GridFS
into the folder (and cleans idle ones), `server` is the HTTP server boards download from.
Import the submodules directly; this package imports nothing so that the store can use
`names` without a cycle.
"""
