# /etc/jupyter/jupyter_server_config.py of the labbuild test image "base-notebook"
# (tests/apps/recipes/base-notebook), written from a reading of jupyter/docker-stacks
# images/base-notebook/jupyter_server_config.py. Same settings: listen on every address, open no
# browser, delete for real (no trash in a container), a self-signed certificate under the Jupyter
# data directory when GEN_CERT is set, and NB_UMASK (octal) as the umask of the server's children.
import os
import subprocess
from pathlib import Path

from jupyter_core.paths import jupyter_data_dir

c = get_config()  # noqa: F821 (defined by the config loader)
c.ServerApp.ip = ""
c.ServerApp.open_browser = False
c.FileContentsManager.delete_to_trash = False

if "GEN_CERT" in os.environ:
    pem = Path(jupyter_data_dir()) / "notebook.pem"
    pem.parent.mkdir(parents=True, exist_ok=True)
    if not pem.exists():
        subprocess.check_call(["openssl", "req", "-new", "-newkey", "rsa:2048", "-days", "365", "-nodes", "-x509",
                               "-subj", "/CN=generated", "-keyout", str(pem), "-out", str(pem)])
    pem.chmod(0o600)
    c.ServerApp.certfile = str(pem)

if "NB_UMASK" in os.environ:
    os.umask(int(os.environ["NB_UMASK"], 8))
