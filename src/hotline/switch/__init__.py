"""Calls, legs, bridges and endpoints; ``control`` is the call-control API the rooms above use."""
