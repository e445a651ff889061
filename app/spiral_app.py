"""spiral's Streamlit app: agents paint, replay and compare (Paint); runs are watched as they train (Training).

Run with ``spiral app`` (or ``streamlit run app/spiral_app.py``). The pages are ``app/paint.py`` and
``app/training.py``; they call the inference API and read run folders, never Ray.
"""

import sys
from pathlib import Path

import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `streamlit run` from anywhere: `app` imports

st.set_page_config(page_title="spiral: painting agents", layout="wide")
st.title("spiral: an agent paints with real brush strokes")
st.navigation([st.Page("paint.py", title="Paint", default=True),
               st.Page("training.py", title="Training")]).run()
