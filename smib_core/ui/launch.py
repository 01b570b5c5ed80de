"""Start Streamlit for app.py with the pages/ folder never used as navigation.

Streamlit treats a `pages/` folder beside the entry script as the old automatic
navigation until the entry script first calls `st.navigation`: on a freshly started
server, a first request for `/fleet` would run `pages/fleet.py` without app.py's sign-in
gate (the page still refuses, as every page checks its permission, but the gate is
skipped and the sidebar lists every page). Setting the flag `st.navigation` sets, before
the server starts, closes that window. `smib serve` and the browser tests start the app
through here: `python -m smib_core.ui.launch run app.py [streamlit options]`.
"""

from __future__ import annotations

import sys

from streamlit.runtime.pages_manager import PagesManager
from streamlit.web.cli import main as streamlit_main


def main() -> None:
    PagesManager.uses_pages_directory = False
    sys.argv = ["streamlit", *sys.argv[1:]]
    streamlit_main()


if __name__ == "__main__":
    main()
