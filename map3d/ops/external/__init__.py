"""Thin adapters to optional compiled libraries (registered lazily; see `map3d.ops.dispatch`)."""
