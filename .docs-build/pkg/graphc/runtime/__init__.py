"""graphc.runtime: executing compiled modules, buffers, the training loop, callbacks and checkpoints."""
