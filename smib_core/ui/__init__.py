"""The Streamlit layer: the only package (with console.py and views/) that imports streamlit."""
