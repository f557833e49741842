"""graphc.ir: types, nodes, graphs, the op registry, autodiff, the interpreter and the passes."""
