"""The bundle: the build side and the read side (its format is ``builder.format``).

Build side (imports blueprints, the lock, the registry): ``render`` output is
planned and written by ``pack`` (byte recipe: ``archive``), images are fetched
by ``fetch``, ``release`` builds/rebuilds and ``record`` keeps releases
immutable. Read side (imports only ``builder.format``, ``reader`` and ``signing``):
``reader`` walks archives, ``verify`` gives the one verdict and the one
verify-while-reading pass, ``diff`` compares two releases. Nothing is
imported here, so ``builder.install`` can use the read side without loading
the build side.
"""
