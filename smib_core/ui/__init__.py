"""The Streamlit layer's shared pieces: the only package (with app.py and pages/) that imports streamlit."""
