"""Weight initializers: ``graphc.ir.init`` (the param op's ``init`` attr, in numpy), re-exported
under their user-facing name."""

from graphc.ir.init import (  # noqa: F401
    INITIALIZERS,
    INTERNAL_INITIALIZERS,
    check_initializer,
    fans,
    initialize,
)
