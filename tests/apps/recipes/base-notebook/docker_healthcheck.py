#!/opt/conda/bin/python
# /etc/jupyter/docker_healthcheck.py of the labbuild test image "base-notebook"
# (tests/apps/recipes/base-notebook), the image's HEALTHCHECK, written from a reading of
# jupyter/docker-stacks images/base-notebook/docker_healthcheck.py. Same contract: the running
# server's URL from its *server-*.json in `jupyter --runtime-dir` (as $NB_USER's home), then GET
# <url>api without proxies or certificate checks; exit 0 on a 2xx answer, and for a server that
# is not on HTTP(S) (a socket).
import json
import os
import subprocess
import sys
from pathlib import Path

import requests

runtime_dir = subprocess.run(["jupyter", "--runtime-dir"], check=True, capture_output=True, text=True,
                             env=dict(os.environ) | {"HOME": "/home/" + os.environ["NB_USER"]}).stdout.strip()
url = json.loads(next(Path(runtime_dir).glob("*server-*.json")).read_bytes())["url"]
if not url.startswith(("http://", "https://")):
    print(f"not an HTTP(S) server ({url}): nothing to check")
    sys.exit(0)
answer = requests.get(url + "api", proxies={"http": "", "https": ""}, verify=False, timeout=5)
answer.raise_for_status()
print(answer.content)
