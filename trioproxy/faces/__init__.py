"""Faces: what each kind of client speaks, on the one pump. Faces never import each other."""
