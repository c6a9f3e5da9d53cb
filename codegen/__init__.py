"""Code generation: Kernel IR -> source (C, Triton), compile, cache, launch. Imports neither lazy nor scheduler."""
