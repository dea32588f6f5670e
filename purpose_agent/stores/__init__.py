"""One module per backend. No backend imports another."""
