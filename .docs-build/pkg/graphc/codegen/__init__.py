"""graphc.codegen: scheduled graph -> LLVM IR (llvmlite), kernels, vector math, JIT and object emission."""
