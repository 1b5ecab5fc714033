"""Local test images of the real upstream applications, built from the packages their
official images are made of (issue "The catalog proven by running it").

``base`` makes one Debian root filesystem (``debootstrap --variant=minbase``) and imports
it as an image; ``recipe`` names each application's recipe (a directory under
``recipes/`` with a Dockerfile built FROM that base) and the catalog services it serves;
``build`` builds a recipe, or finds it already built; ``images`` is the command
(``python -m tests.apps.images --registry HOST:PORT [--json]``) that builds and pushes
them all; ``testlab`` makes a test lab: the shipped blueprints with only ``[image]``
replaced by a local build.

Every image is cached in the engine under a tag carrying the hash of its recipe (and
of the base's): a second run finds it and costs seconds. Nothing here removes them;
``docker rmi`` the ``labbuild-apps/*`` tags to start over.
"""
