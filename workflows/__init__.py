"""The `p2g` command line: thin click verbs over the library's functions. Nothing imports this package."""
