"""Write docs/supported-layers.md from the layer taxonomy (relief_nb/graph/taxonomy.py).

    .venv/bin/python docs/make_supported_layers.py
"""

from pathlib import Path

from relief_nb.graph.taxonomy import markdown

if __name__ == "__main__":
    target = Path(__file__).resolve().parent / "supported-layers.md"
    target.write_text(markdown())
    print(f"wrote {target}")
