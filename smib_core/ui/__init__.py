"""The Streamlit layer: the only package (with app.py and pages/) that imports streamlit."""
