"""One module per tab; each exposes `build(...)` that renders its components inside an open `gr.Tab`."""
