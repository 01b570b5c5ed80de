"""Use cases: what the app and the CLI do, above the protocol, bus and stores (no streamlit)."""
