"""The Streamlit layer: the only package (with pages/) that imports streamlit."""
