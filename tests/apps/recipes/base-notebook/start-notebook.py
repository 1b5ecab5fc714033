#!/opt/conda/bin/python
# start-notebook.py of the labbuild test image "base-notebook" (tests/apps/recipes/base-notebook),
# the default command, written from a reading of jupyter/docker-stacks
# images/base-notebook/start-notebook.py. Same contract: under JupyterHub (JUPYTERHUB_API_TOKEN
# set) start-singleuser.py takes over; otherwise `jupyter $DOCKER_STACKS_JUPYTER_CMD` (default
# lab), then $NOTEBOOK_ARGS split as a shell would, then this script's arguments.
# RESTARTABLE=yes needs run-one, which this image lacks: refused.
import os
import shlex
import sys

if "JUPYTERHUB_API_TOKEN" in os.environ:
    print("start-notebook.py: under JupyterHub, starting start-singleuser.py", flush=True)
    os.execvp("/usr/local/bin/start-singleuser.py", ["/usr/local/bin/start-singleuser.py", *sys.argv[1:]])
if os.environ.get("RESTARTABLE") == "yes":
    sys.exit("start-notebook.py: RESTARTABLE=yes needs run-one, which this test image lacks")
argv = ["jupyter", os.environ.get("DOCKER_STACKS_JUPYTER_CMD", "lab"),
        *shlex.split(os.environ.get("NOTEBOOK_ARGS", "")), *sys.argv[1:]]
print("start-notebook.py: executing " + " ".join(argv), flush=True)
os.execvp(argv[0], argv)
