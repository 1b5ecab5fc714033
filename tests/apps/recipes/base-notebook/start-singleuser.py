#!/opt/conda/bin/python
# start-singleuser.py of the labbuild test image "base-notebook" (tests/apps/recipes/base-notebook),
# written from a reading of jupyter/docker-stacks images/base-notebook/start-singleuser.py. Same
# contract: jupyterhub-singleuser with $NOTEBOOK_ARGS and this script's arguments, and
# --SingleUserNotebookApp.default_url=/lab unless DOCKER_STACKS_JUPYTER_CMD names another UI.
import os
import shlex
import sys

argv = ["jupyterhub-singleuser"]
if os.environ.get("DOCKER_STACKS_JUPYTER_CMD", "lab") == "lab" and "JUPYTERHUB_DEFAULT_URL" not in os.environ:
    argv.append("--SingleUserNotebookApp.default_url=/lab")
argv += [*shlex.split(os.environ.get("NOTEBOOK_ARGS", "")), *sys.argv[1:]]
print("start-singleuser.py: executing " + " ".join(argv), flush=True)
os.execvp(argv[0], argv)
