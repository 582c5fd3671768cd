"""The ``learnstream`` commands, one module each: its options and what it runs.

:mod:`stream.cli` registers them; each module's ``register`` adds its
subcommand, and ``run`` carries it out with the settings built from the
parsed options.
"""
