"""Hosts in network namespaces, the links between them, and the ledger that undoes them."""
